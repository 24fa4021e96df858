"""`/status`: the service at a glance, in a browser (`service.overview`).

A browser cannot add an `Authorization` header to a page it navigates to, so the page
also takes its key from a cookie that `POST /status/session` sets from a sign-in form:
HttpOnly (no script reads it), SameSite=Strict, scoped to `/status`, and gone when the
browser closes. A client that sends a key header (curl, a monitor) gets the page
without the cookie. Not in the OpenAPI document: it is a page, not an API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import ApiKeyHeaderDep, BearerDep, SessionDep, presented_key
from service.api.status_page import HEADERS, render_login, render_status
from service.db import release
from service.keys import authenticate
from service.metrics.broker import queue_counts
from service.models import utcnow
from service.overview import overview

router = APIRouter(tags=["status"], include_in_schema=False)
COOKIE = "longdoc_status_key"
_PATH = "/status"


def _login(message: str | None, status_code: int = 401) -> HTMLResponse:
    page = HTMLResponse(render_login(message=message), status_code=status_code, headers=HEADERS)
    if message is not None:
        page.delete_cookie(COOKIE, path=_PATH)
    return page


def _broker() -> dict[str, int] | None:
    try:
        return queue_counts(timeout_s=1.0)
    except Exception:  # any transport's failure: the page says the broker did not answer
        return None


@router.get(_PATH, response_class=HTMLResponse)
def status_page(
    request: Request,
    session: SessionDep,
    creds: BearerDep,
    header: ApiKeyHeaderDep,
    refresh: Annotated[int, Query(ge=0, le=3600, description="Seconds; 0: no refresh")] = 10,
) -> Response:
    sent = creds is not None or header is not None
    key = presented_key(creds, header) if sent else request.cookies.get(COOKIE)
    if not key:
        return _login(None)
    who = authenticate(session, key)
    if who is None:
        return _login("That key is not valid (revoked, or mistyped).")
    view = overview(session, who, utcnow())
    release(session)  # the broker's round trip is made without a connection held
    broker = _broker() if who.is_admin else None
    return HTMLResponse(render_status(view, refresh_s=refresh, broker=broker), headers=HEADERS)


@router.post(f"{_PATH}/session")
async def sign_in(
    request: Request, session: SessionDep, key: Annotated[str, Form(max_length=200)]
) -> Response:
    who = await run_in_threadpool(authenticate, session, key.strip())
    if who is None:
        return _login("That key is not valid (revoked, or mistyped).")
    page = RedirectResponse(_PATH, status_code=303, headers=HEADERS)
    page.set_cookie(
        COOKIE,
        key.strip(),
        path=_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return page


@router.post(f"{_PATH}/logout")
def sign_out() -> Response:
    page = RedirectResponse(_PATH, status_code=303, headers=HEADERS)
    page.delete_cookie(COOKIE, path=_PATH)
    return page
