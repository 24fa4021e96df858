"""The error answers the API gives, declared in its OpenAPI document so that a client
(and schemathesis) can rely on their shape.

Every refusal is `{"detail": ...}`: a sentence, an object with a `code` to branch on
and the `reason` in words (plus fields such as `supported` or `errors`), or, for a
request that does not match the declared parameters, FastAPI's list of issues.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    reason: str | None = Field(default=None, description="Absent when `errors` lists them.")


class ValidationIssue(BaseModel):
    model_config = ConfigDict(extra="allow")

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    detail: str | ErrorDetail | list[ValidationIssue]


_DESCRIPTIONS = {
    400: "A malformed request body",
    401: "No key, or not a valid key",
    403: "The key may not do this",
    404: "No such resource for this tenant",
    409: "The resource is not in a state that allows this",
    413: "The request body is over its limit; nothing stored",
    415: "Not a supported media type",
    422: "Parameters or body that do not validate",
    429: "Over a limit of this tenant's: retry after the seconds in Retry-After",
    503: "Overloaded: retry after the seconds in Retry-After",
}
_RETRY_AFTER = {
    "Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def errors(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these status codes; `described` (as `e409="..."`)
    replaces a code's generic description with the route's own."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "model": Problem,
            "description": described.get(f"e{code}", _DESCRIPTIONS[code]),
        }
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        out[code] = entry
    return out


# Every /v1 route: a key is needed, and load may be shed.
V1 = errors(401, 503)
