"""Shed load early: a bounded number of requests run at once, a bounded number wait,
and the rest get 503 with Retry-After at once, instead of queueing in the database
pool for 30 s and failing with a 500.

Every running request holds at most one database connection and one thread at a
time, so with `max_concurrent_requests` no larger than the pool and the thread pool,
no request ever waits for either while holding the other.
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.problems import error_response
from service.config import Settings

log = logging.getLogger(__name__)

# Probes answer however busy the API is: liveness touches nothing, and readiness one
# connection of the pool's spare ones (its own failure is a 503 of its own shape).
_UNGATED = frozenset({"/healthz", "/readyz"})


def overloaded(reason: str, retry_after_s: int) -> JSONResponse:
    return error_response(
        503,
        "overloaded",
        f"the API is overloaded: {reason}; retry after {retry_after_s} s",
        headers={"Retry-After": str(retry_after_s)},
    )


class RequestGate:
    """ASGI middleware: at most `limit` requests in the app, at most `max_queued`
    waiting (each for up to `wait_s`) for a place."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.limit = settings.max_concurrent_requests
        self.max_queued = settings.max_queued_requests
        self.wait_s = settings.request_queue_timeout_s
        self.retry_after_s = settings.overload_retry_after_s
        self.waiting = 0
        self._slots: anyio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNGATED:
            await self.app(scope, receive, send)
            return
        if self._slots is None:  # made in the event loop that serves it
            self._slots = anyio.Semaphore(self.limit)
        slots = self._slots
        if slots.value == 0 and self.waiting >= self.max_queued:
            reason = f"{self.limit} requests running and {self.waiting} waiting"
            await overloaded(reason, self.retry_after_s)(scope, receive, send)
            return
        self.waiting += 1
        acquired = False
        try:
            with anyio.move_on_after(self.wait_s):
                await slots.acquire()
                acquired = True
        finally:
            self.waiting -= 1
        if not acquired:
            reason = f"no place to run within {self.wait_s:g} s"
            await overloaded(reason, self.retry_after_s)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            slots.release()


async def _pool_timeout(request: Request, exc: Exception) -> Response:
    # Only when the pool is smaller than the requests let in (misconfigured) or shared
    # with work outside any request; a backstop, so say so in the log.
    settings: Settings = request.app.state.settings
    log.warning("no database connection within %s s: %s", settings.db_pool_timeout_s, exc)
    reason = f"no database connection within {settings.db_pool_timeout_s:g} s"
    return overloaded(reason, settings.overload_retry_after_s)


def install(app: FastAPI, settings: Settings) -> None:
    app.state.settings = settings
    app.add_middleware(RequestGate, settings=settings)
    app.add_exception_handler(PoolTimeout, _pool_timeout)


def size_thread_pool(settings: Settings) -> None:
    """Sync handlers and dependencies run on anyio's default thread limiter; call from
    within the event loop, at startup."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
