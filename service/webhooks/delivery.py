"""Sending the outbox: due deliveries handed to tasks, each attempt signed, sent to
the checked address, and its outcome written back.

A delivery is held while a task has it (`next_attempt_at` moved past the longest an
attempt can take), so two tasks never send it at once and a worker that dies with
it only delays it: once the hold passes the periodic scan hands it out again. The
task carries the hold it was given; a duplicate message, or one that arrives after
the scan handed the row out again, finds another hold and does nothing.

Outcomes (Standard Webhooks' advice): a 2xx delivered it; 410 Gone disables the
endpoint and whatever else waits for it; anything else (429, 5xx, a redirect, a
timeout, a refused connection) is tried again after an exponential backoff, or
later if the receiver's Retry-After says so, until `webhook_max_attempts`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service import logs
from service.config import Settings
from service.db import NO_SYNC, write_transaction
from service.errors import Invalid
from service.metrics.definitions import record_webhook
from service.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, utcnow
from service.webhooks import outbox
from service.webhooks.destinations import Destination, check_destination
from service.webhooks.signing import signed_headers

log = logging.getLogger(__name__)
_PENDING = DeliveryStatus.pending
_DEFAULT_PORTS = {"http": 80, "https": 443}
# What is kept of an error for the client to read.
_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class Claimed:
    id: str
    url: str
    body: bytes
    secrets: list[str]
    endpoint_id: object
    attempts: int


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str | None
    retry_after_s: float | None = None
    final: bool = False  # no later attempt could go otherwise (e.g. a private address)


def hold_s(settings: Settings) -> float:
    """How long a task holds a delivery: longer than any attempt can take."""
    return settings.webhook_timeout_s * 4 + 30


def hand_out(
    session: Session, settings: Settings, dispatch: Callable[[str, str], object], limit: int = 100
) -> int:
    """Hold the due deliveries and send a task for each; returns how many."""
    now = utcnow()
    until = now + timedelta(seconds=hold_s(settings))
    with write_transaction(session):
        ids = list(
            session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == _PENDING, WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        if ids:
            stmt = update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
            session.execute(stmt.values(next_attempt_at=until), execution_options=NO_SYNC)
    for delivery_id in ids:
        dispatch(delivery_id, until.isoformat())
    return len(ids)


def _signing_secrets(session: Session, row: WebhookDelivery) -> list[str]:
    if row.endpoint_id is not None:
        endpoint = session.get(WebhookEndpoint, row.endpoint_id)
        return [] if endpoint is None or not endpoint.enabled else list(endpoint.secrets)
    found = outbox.endpoints(session, row.tenant_id)
    return list(found[0].secrets) if found else []


def claim(session: Session, settings: Settings, delivery_id: str, held: str) -> Claimed | None:
    """The delivery, held for this task, if `held` is still its hold; None otherwise."""
    now = utcnow()
    with write_transaction(session):
        row = session.scalar(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == _PENDING)
            .with_for_update()  # held by others only for a moment (a hand-out, a record)
        )
        if row is None or row.next_attempt_at is None:
            return None
        logs.bind(job_id=row.job_id, batch_id=row.batch_id)  # for the task's lines
        if row.next_attempt_at != datetime.fromisoformat(held):
            return None
        secrets = _signing_secrets(session, row)
        if not secrets:
            why = "its endpoint was disabled or removed" if row.endpoint_id else "no secret"
            row.status, row.last_error = DeliveryStatus.disabled, why
            return None
        row.next_attempt_at = now + timedelta(seconds=hold_s(settings))
        body = json.dumps(row.payload, separators=(",", ":")).encode()
        return Claimed(row.id, row.url, body, secrets, row.endpoint_id, row.attempts)


def retry_after(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (seconds, or an HTTP date) as seconds from `now`."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - now).total_seconds(), 0.0)


def _request_target(dest: Destination) -> tuple[str, str]:
    """The URL to the pinned address, and the Host header naming the host."""
    address = f"[{dest.address}]" if ":" in dest.address else dest.address
    host = dest.host if dest.port == _DEFAULT_PORTS[dest.scheme] else f"{dest.host}:{dest.port}"
    return f"{dest.scheme}://{address}:{dest.port}{dest.target}", host


def post(settings: Settings, claimed: Claimed) -> Outcome:
    """One attempt: check the URL again (its name may resolve elsewhere now), sign,
    and POST to the address the check returned. The answer's body is never read."""
    try:
        dest = check_destination(claimed.url, allow_private=settings.webhook_private_allowed)
    except Invalid as err:
        # A name that does not resolve may yet; a URL refused as such never will be.
        return Outcome(None, f"{err.code}: {err.reason}", final=err.code != "callback_unresolvable")
    url, host = _request_target(dest)
    headers = signed_headers(claimed.secrets, claimed.body, message_id=claimed.id)
    headers |= {"Host": host, "Content-Type": "application/json", "User-Agent": "Longdoc-Webhooks"}
    try:
        with (
            httpx.Client(
                timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False
            ) as client,
            client.stream(
                "POST",
                url,
                content=claimed.body,
                headers=headers,
                extensions={"sni_hostname": dest.host},
            ) as answer,
        ):
            code = answer.status_code
            wait = retry_after(answer.headers.get("retry-after"), utcnow())
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS])
    if 200 <= code < 300:
        return Outcome(code, None)
    if 300 <= code < 400:
        return Outcome(code, "a redirect: webhooks do not follow them", wait)
    return Outcome(code, f"the receiver answered {code}", wait)


def backoff_s(settings: Settings, attempts: int, wait: float | None) -> float:
    """Seconds before attempt `attempts + 1`: doubling, or the receiver's Retry-After
    when it asks for longer, never past the cap."""
    doubled = settings.webhook_backoff_s * 2 ** max(attempts - 1, 0)
    return float(min(max(doubled, wait or 0.0), settings.webhook_max_backoff_s))


def _disable_endpoint(session: Session, endpoint_id: object, reason: str) -> None:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is not None:
        endpoint.enabled, endpoint.disabled_reason = False, reason
    waiting = update(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == _PENDING
    )
    session.execute(
        waiting.values(status=DeliveryStatus.disabled, last_error=reason),
        execution_options=NO_SYNC,
    )


def record(session: Session, settings: Settings, claimed: Claimed, outcome: Outcome) -> None:
    """Write the attempt's outcome: delivered, disabled, due again, or failed."""
    now = utcnow()
    with write_transaction(session):
        row = session.get(WebhookDelivery, claimed.id, with_for_update=True)
        if row is None or row.status != _PENDING:
            return
        row.attempts = claimed.attempts + 1
        row.last_status_code, row.last_error = outcome.status_code, outcome.error
        if outcome.status_code is not None and 200 <= outcome.status_code < 300:
            row.status, row.delivered_at, row.next_attempt_at = DeliveryStatus.succeeded, now, None
        elif outcome.status_code == 410:
            reason = f"{row.url} answered 410 Gone at {now.isoformat()}"
            row.status, row.next_attempt_at = DeliveryStatus.disabled, None
            if claimed.endpoint_id is not None:
                session.flush()
                _disable_endpoint(session, claimed.endpoint_id, reason)
        elif outcome.final or row.attempts >= settings.webhook_max_attempts:
            row.status, row.next_attempt_at = DeliveryStatus.failed, None
        else:
            wait = backoff_s(settings, row.attempts, outcome.retry_after_s)
            row.next_attempt_at = now + timedelta(seconds=wait)
        ended = "retry" if row.status == _PENDING else str(row.status)
    record_webhook(ended)  # committed: the attempt's outcome as the row now says


def deliver(
    sessions: Callable[[], Session], settings: Settings, delivery_id: str, held: str
) -> str:
    """The task's work: claim, send once, record. Returns what became of it."""
    with sessions() as session:
        claimed = claim(session, settings, delivery_id, held)
    if claimed is None:
        return "skipped"
    outcome = post(settings, claimed)
    with sessions() as session:
        record(session, settings, claimed, outcome)
    code, error = outcome.status_code, outcome.error
    log.info("webhook %s to %s: %s %s", delivery_id, _origin(claimed.url), code, error)
    return "sent"


def _origin(url: str) -> str:
    """Scheme, host and port only: a callback URL's path or query may hold the
    receiver's token (many hook URLs do), and its user info a password."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}"
