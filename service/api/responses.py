"""The one error body the API gives, declared in its OpenAPI document so that a client
(and schemathesis) can rely on its shape.

Every 4xx and 5xx is `{"error": {"code": ..., "reason": ..., "field": ...}}`: a
stable `code` to branch on, the `reason` in words, and for input that is refused the
`field` it is about (a dotted path such as `body.max_output_tokens` or
`query.offset`). Some refusals add keys of their own beside them (`supported`,
`job_ids`, `status`, `raw_output`, and `errors` listing every validation issue).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FieldIssue(BaseModel):
    code: str = Field(description="What is wrong, e.g. `missing` or `greater_than_equal`.")
    reason: str
    field: str | None = Field(default=None, description="Dotted path of the input at fault.")


class ErrorInfo(FieldIssue):
    # Room for the keys some refusals add (listed in the module docstring).
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="Stable: branch on this, not on `reason`.")
    message: str | None = Field(default=None, description="`reason` again, as SDKs read it.")
    param: str | None = Field(default=None, description="`field` again, as SDKs read it.")
    errors: list[FieldIssue] | None = Field(
        default=None, description="Every issue, when the request has more than one."
    )


class ErrorResponse(BaseModel):
    error: ErrorInfo


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
            "model": ErrorResponse,
            "description": described.get(f"e{code}", _DESCRIPTIONS[code]),
        }
        if code in _HEADERS:
            entry["headers"] = _HEADERS[code]
        out[code] = entry
    return out


_JSON_BODY = {
    "e400": "A body that is not JSON text (e.g. not UTF-8)",
    "e413": "A JSON body over the API's limit",
}


def json_body_errors(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """`errors` for a route that reads a JSON body, which may also be refused as not JSON
    text (400) or over the API's JSON limit (413, from the body-limit middleware)."""
    return errors(*sorted({400, 413, *codes}), **{**_JSON_BODY, **described})


# Every /v1 route: a key is needed, and load may be shed.
V1 = errors(401, 503)
