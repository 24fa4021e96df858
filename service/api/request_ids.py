"""A request id for every request: the client's `X-Request-ID` when it is a sane one,
a new one otherwise, bound for the log lines of the request (service/logs.py) and
sent back in the response's `X-Request-ID`.

Bound and not unbound: uvicorn runs each request in an asyncio task of its own, so
the binding ends with the task. It must outlive this middleware: Starlette's
outermost layer (ServerErrorMiddleware) answers an unhandled error after the
middleware has returned, and that 500 (problems.py) and uvicorn's lines about it, the
traceback and the access line, must still carry the id.
"""

from __future__ import annotations

import string
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs

HEADER = "X-Request-ID"
_MAX_LENGTH = 128
# What ids from proxies and tracing look like (UUIDs, hex, base64url, dotted, `a:b`),
# and nothing that could break a log line or a header.
_ALLOWED = frozenset(string.ascii_letters + string.digits + "-_.:")


def well_formed(value: str) -> bool:
    return 0 < len(value) <= _MAX_LENGTH and set(value) <= _ALLOWED


def current() -> str | None:
    return logs.current_ids().get("request_id")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get(HEADER)
        request_id = given if given is not None and well_formed(given) else uuid.uuid4().hex
        logs.bind(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)
