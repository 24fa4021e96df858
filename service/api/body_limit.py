"""A cap on request bodies, counted as they arrive.

Every route gets `max_json_body_bytes` unless it raises its own cap before it reads
(the upload route, which streams up to `max_upload_bytes`). A declared Content-Length
over the cap is refused before a byte is read; a chunked body, or one whose
Content-Length is absent, is cut the moment the bytes received pass it. FastAPI reads
a JSON body whole before any handler or dependency runs, so this has to sit in front.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import error_response

_SCOPE_KEY = "longdoc.max_body_bytes"


class BodyTooLarge(HTTPException):
    # An HTTPException, so that FastAPI's body reader passes it on as it is (it turns
    # any other error while reading into a 400).
    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, detail=f"request body over the limit of {limit} bytes for this route; not read"
        )


def allow(request: Request, limit: int) -> None:
    """Let this request's body run to `limit` bytes; call before reading it."""
    request.scope[_SCOPE_KEY] = limit


def _declared_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_KEY] = self.limit
        declared = _declared_length(scope)
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            limit: int = scope[_SCOPE_KEY]
            if declared is not None and declared > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as exc:
            # Raised where no exception handler saw it (outside a route): answer here.
            if started:
                raise
            answer = error_response(413, exc.code, exc.detail)
            await answer(scope, receive, send)
