"""The outbox: a delivery row per event and receiver, written in the transaction that
makes the change it announces.

So a job that ends is announced exactly when its end commits (a rollback takes the
delivery with it), and a delivery outlives any worker: `service.webhooks.delivery`
sends what is due, and the row, not a broker message, says what is. Payloads are
thin (`{type, timestamp, data: {id, object, status}}`, and a succeeded job's
`result_url`): a receiver fetches the job, its result or the batch for the rest, with
its own key, so a webhook never carries a result.

Who receives: every enabled endpoint of the tenant, and the job's or batch's own
callback URL. A job of a batch is announced by its batch's event only (a batch of a
thousand requests is one event, not a thousand). Callback deliveries are signed with
the secrets of the tenant's oldest enabled endpoint (`signing_secrets`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from service.models import (
    FINAL,
    Batch,
    Job,
    JobStatus,
    WebhookDelivery,
    WebhookEndpoint,
)
from service.webhooks.signing import new_message_id


def endpoints(session: Session, tenant_id: uuid.UUID) -> list[WebhookEndpoint]:
    """The tenant's enabled endpoints, oldest first."""
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.enabled.is_(True)
    )
    return list(session.scalars(stmt.order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))


def enqueue(
    session: Session,
    event: str,
    *,
    tenant_id: uuid.UUID,
    data: dict[str, object],
    now: datetime,
    callback_url: str | None = None,
    job_id: uuid.UUID | None = None,
    batch_id: uuid.UUID | None = None,
) -> list[WebhookDelivery]:
    """Insert `event`'s deliveries (one per endpoint, one for `callback_url`), due now,
    in the caller's transaction; the caller commits."""
    body = {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
    targets: list[tuple[uuid.UUID | None, str]] = [
        (e.id, e.url) for e in endpoints(session, tenant_id)
    ]
    if callback_url:
        targets.append((None, callback_url))
    rows = [
        WebhookDelivery(
            id=new_message_id(),
            tenant_id=tenant_id,
            endpoint_id=endpoint_id,
            url=url,
            event_type=event,
            payload=body,
            job_id=job_id,
            batch_id=batch_id,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        for endpoint_id, url in targets
    ]
    session.add_all(rows)
    return rows


def jobs_ended(session: Session, job_ids: Iterable[uuid.UUID], now: datetime) -> int:
    """Announce those of `job_ids` that are clients' jobs (no parent, no batch) in a
    final state and not announced yet. Called under the jobs' locks by whoever wrote
    the final state, in that transaction; returns how many events were made."""
    ids = set(job_ids)
    if not ids:
        return 0
    announced = exists().where(WebhookDelivery.job_id == Job.id)
    rows = session.execute(
        select(Job.id, Job.tenant_id, Job.status, Job.webhook_url).where(
            Job.id.in_(ids),
            Job.parent_id.is_(None),
            Job.batch_id.is_(None),
            Job.status.in_(FINAL),
            ~announced,
        )
    ).all()
    for job_id, tenant_id, status, url in rows:
        data: dict[str, object] = {"id": str(job_id), "object": "job", "status": status.value}
        if status == JobStatus.succeeded:
            # Where the result is read (with the receiver's own key), not the result: the
            # path under the API's base, which a worker does not know.
            data["result_url"] = f"/v1/jobs/{job_id}/result"
        enqueue(
            session,
            f"job.{status.value}",
            tenant_id=tenant_id,
            data=data,
            now=now,
            callback_url=url,
            job_id=job_id,
        )
    return len(rows)


def batch_ended(session: Session, batch: Batch, public_id: str, now: datetime) -> None:
    """Announce a batch that reached a final state (in the transaction that moved it)."""
    enqueue(
        session,
        f"batch.{batch.status.value}",
        tenant_id=batch.tenant_id,
        data={"id": public_id, "object": "batch", "status": batch.status.value},
        now=now,
        callback_url=batch.callback_url,
        batch_id=batch.id,
    )


def deliveries(
    session: Session, *, job_id: uuid.UUID | None = None, batch_id: uuid.UUID | None = None
) -> list[WebhookDelivery]:
    """A job's or a batch's deliveries, oldest first (a handful: one per receiver)."""
    where = WebhookDelivery.job_id == job_id if job_id else WebhookDelivery.batch_id == batch_id
    stmt = select(WebhookDelivery).where(where).order_by(WebhookDelivery.created_at)
    return list(session.scalars(stmt.limit(50)))
