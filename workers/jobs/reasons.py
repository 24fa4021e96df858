"""Failure reasons as tenants read them (`error.reason` of jobs and documents).

A tenant learns which role and which backend (by the id `/v1/backends` and job views
show) failed, and how, never the server's URL or raw exception text: those are the
operator's, and go to the worker log here (and, for a server seen down, to its
`backends.last_error`, which only admin keys see).
"""

from __future__ import annotations

import logging
import re
import uuid
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.backends.completion import VllmError
from service.models import Backend

log = logging.getLogger(__name__)
_MAX_SERVER_TEXT = 500


def backend_name(role: str, backend_id: uuid.UUID) -> str:
    return f"{role} backend {backend_id}"


def server_failure(session: Session, job_id: uuid.UUID, url: str, err: VllmError) -> str:
    """What a job's reason says about a request `url` failed with `err`; logs the detail.

    A refusal (4xx) keeps the server's own words, which are about the tenant's request
    (an unsupported schema, a prompt too long); a 5xx or a transport error is named
    only, as its text is about the server (tracebacks, addresses, engine state)."""
    log.warning("job %s: request to %s failed: %s", job_id, url, err.message)
    row = session.execute(select(Backend.id, Backend.role).where(Backend.url == url)).first()
    name = "its backend" if row is None else backend_name(row.role, row.id)
    if err.status is None:
        return f"{name} could not be reached or stopped answering mid-request"
    if err.retryable or err.status >= 500:
        return f"{name} failed the request (HTTP {err.status})"
    return f"{name} refused the request (HTTP {err.status}): {_scrubbed(err.message, url)}"


def _scrubbed(message: str, url: str) -> str:
    """The server's text without the client's framing or the server's address."""
    for frame in (r"HTTP \d+ from {}: ", r"error from {} mid-stream: "):
        message = re.sub("^" + frame.format(re.escape(url)), "", message)
    netloc = urlsplit(url).netloc
    for where in (url, netloc):
        if where:
            message = message.replace(where, "the server")
    return message[:_MAX_SERVER_TEXT]


def none_up(session: Session, job_id: uuid.UUID, role: str) -> str:
    """Which replicas of `role` there are (none of them up as configured): down, or up
    but not usable (mismatched, service/backends/mismatch.py; a tenant learns no more);
    logs their URLs and errors."""
    rows = session.execute(
        select(Backend.id, Backend.url, Backend.last_error, Backend.mismatches)
        .where(Backend.role == role)
        .order_by(Backend.id)
    ).all()
    for r in rows:
        state = "up but mismatched" if r.mismatches else "down"
        log.warning(
            "job %s: %s backend %s (%s) is %s: %s", job_id, role, r.id, r.url, state, r.last_error
        )
    if not rows:
        return "none configured"
    groups = {
        "down": [str(r.id) for r in rows if not r.mismatches],
        "not usable": [str(r.id) for r in rows if r.mismatches],
    }
    return "; ".join(f"{name}: {', '.join(ids)}" for name, ids in groups.items() if ids)
