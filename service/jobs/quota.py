"""How many jobs a tenant may have waiting: the check behind a 429 at job creation.

A job waits (for this limit) while it was created by the client (not by a batch), is
not final and none of its requests holds a KV lease: a queued or
`waiting_for_capacity` job, or a map-reduce job none of whose map or reduce requests
is running. Its child requests
are not counted themselves; they meet the running and KV-share limits at admission.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from service.config import Settings
from service.errors import QuotaExceeded
from service.models import FINAL, Job, KvLease, Tenant


def waiting_jobs(session: Session, tenant_id: uuid.UUID, besides: uuid.UUID | None = None) -> int:
    leased = select(KvLease.job_id)
    child = aliased(Job)
    busy_parents = select(child.parent_id).where(child.id.in_(leased), child.parent_id.is_not(None))
    stmt = (
        select(func.count())
        .select_from(Job)
        .where(
            Job.tenant_id == tenant_id,
            Job.parent_id.is_(None),
            # A batch's requests are bounded by its own limits, and must not hold the
            # tenant's interactive jobs back.
            Job.batch_id.is_(None),
            Job.status.not_in(FINAL),
            Job.id.not_in(leased),
            Job.id.not_in(busy_parents),
        )
    )
    if besides is not None:
        stmt = stmt.where(Job.id != besides)
    return session.scalar(stmt) or 0


def check_room(
    session: Session, settings: Settings, tenant_id: uuid.UUID, *, new_job: uuid.UUID | None = None
) -> None:
    """Raise QuotaExceeded (a 429 with Retry-After) if the tenant already has its limit of jobs
    waiting. With `new_job` (the job about to be committed, not counted) the
    tenant's row is locked first, so that concurrent creations count one another:
    the lock is held until the caller's commit. FOR NO KEY UPDATE does not block
    the foreign-key checks of rows inserted for the tenant."""
    if new_job is not None:
        lock = select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        session.execute(lock)
    n = waiting_jobs(session, tenant_id, new_job)
    limit = settings.tenant_max_queued_jobs
    if n >= limit:
        raise QuotaExceeded(
            "too_many_queued_jobs",
            f"this tenant already has {n:,} jobs waiting to run, the limit is "
            f"{limit:,}: retry once some have started",
            retry_after_s=settings.tenant_retry_after_s,
        )


def check_room_before_upload(
    session: Session, settings: Settings, tenant_id: uuid.UUID, idempotency_key: str | None
) -> None:
    """`POST /v1/documents?task=`: refuse before the upload is read (nothing stored)
    unless the idempotency key names an existing job, which the call will return.
    Ends the read transaction: no connection is held while the body streams in."""
    try:
        if idempotency_key is not None:
            known = select(Job.id).where(
                Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key
            )
            if session.scalar(known) is not None:
                return
        check_room(session, settings, tenant_id)
    finally:
        session.rollback()
