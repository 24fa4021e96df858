"""Every refusal in one body (`responses.ErrorResponse`), and the one place that
says which status code each of the core's errors is.

The core raises `service.errors`; FastAPI raises its validation error; Starlette its
HTTPException (an unknown route, a method not allowed, a body over the limit); the
middlewares that answer before any route (load shedding, the body limit) call
`error_response` themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from service import errors
from service.api import request_ids

# Checked in order: the first class an error is an instance of gives its status.
_STATUS: tuple[tuple[type[errors.DomainError], int], ...] = (
    (errors.BadRequest, 400),
    (errors.Unauthenticated, 401),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.Unsupported, 415),
    (errors.Invalid, 422),
    (errors.QuotaExceeded, 429),
    (errors.Unavailable, 503),
)
# Codes for the statuses that Starlette and FastAPI raise with words only.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def body(code: str, reason: str, field: str | None = None, /, **extra: Any) -> dict[str, Any]:
    # `message` and `param` repeat `reason` and `field` under the names the openai and
    # anthropic SDKs read off an error (`err.param`, the message they show).
    info: dict[str, Any] = {"code": code, "reason": reason, "message": reason, **extra}
    if field is not None:
        info["field"] = info["param"] = field
    return {"error": info}


def error_response(
    status: int,
    code: str,
    reason: str,
    /,
    *,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(body(code, reason, field, **extra), status_code=status, headers=headers)


def status_of(exc: errors.DomainError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500  # a DomainError subclass that this table has not been told about


def field_path(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc)


def issues(found: Iterable[Any], prefix: Sequence[str] = ()) -> list[dict[str, str]]:
    """Pydantic's error dicts as `FieldIssue`s; `prefix` places them in the request."""
    return [
        {"code": e["type"], "reason": e["msg"], "field": field_path([*prefix, *e["loc"]])}
        for e in found
    ]


def _domain(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.DomainError)
    headers: dict[str, str] = {}
    if isinstance(exc, errors.Throttled):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, errors.Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(
        status_of(exc), exc.code, exc.reason, field=exc.field, headers=headers, **exc.extra
    )


def _http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = getattr(exc, "code", None) or _HTTP_CODES.get(status, f"http_{status}")
    reason = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if status in (204, 304) or status < 200:
        return Response(status_code=status, headers=exc.headers)
    return error_response(status, code, reason, headers=exc.headers)


def _validation(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = issues(exc.errors())
    if not found:
        return error_response(422, "invalid", "the request does not validate")
    first = found[0]
    more: dict[str, Any] = {"errors": found} if len(found) > 1 else {}
    return error_response(422, first["code"], first["reason"], field=first["field"], **more)


def _unexpected(_request: Request, exc: Exception) -> Response:
    # Starlette logs it and re-raises after this answer; only the body is ours. Sent
    # from outside the request-id middleware, so the id is added here.
    rid = request_ids.current()
    headers = {request_ids.HEADER: rid} if rid else None
    return error_response(500, "internal_error", "internal server error", headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.DomainError, _domain)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
