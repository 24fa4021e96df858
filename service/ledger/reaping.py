"""Dead KV leases: expired, or whose job no longer runs. Reaping deletes them and puts
their jobs back in the queue (or fails those out of attempts); `expire` sweeps every
backend, `try_admit` its own role's under the lock it already holds."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.orm import Session

from service.db import NO_SYNC, retry_conflicts, write_transaction
from service.jobs.tree import lock
from service.models import Backend, Job, JobStatus, KvLease
from service.webhooks import outbox


@retry_conflicts
def expire(
    session: Session, now: datetime, *, max_attempts: int = 3, tenant_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Delete every expired lease (and any whose job is not running); put their jobs
    back in the queue, or fail them after `max_attempts` expiries. Returns the jobs
    moved. `try_admit` reaps its own role too; this sweeps roles nobody admits on.
    With `tenant_id`, only the backends holding that tenant's dead leases are reaped
    (a test in a shared database reaps on its own backends)."""
    with write_transaction(session):
        dead = select(KvLease.backend_id).where(_dead(now))
        if tenant_id is not None:
            dead = dead.where(KvLease.job_id.in_(select(Job.id).where(Job.tenant_id == tenant_id)))
        ids = list(session.scalars(dead.distinct()))
        if not ids:
            return []
        backends = select(Backend.id).where(Backend.id.in_(ids)).order_by(Backend.id)
        session.execute(backends.with_for_update(key_share=True)).all()
        return reap(session, ids, now, max_attempts)


def _dead(now: datetime) -> ColumnElement[bool]:
    running = select(Job.id).where(Job.status == JobStatus.running)
    return or_(KvLease.expires_at <= now, KvLease.job_id.not_in(running))


def reap(
    session: Session, backend_ids: Sequence[uuid.UUID], now: datetime, max_attempts: int
) -> list[uuid.UUID]:
    """Delete the dead leases on backends the caller has locked; requeue their jobs,
    or fail those admitted `max_attempts` times already (admission counts them)."""
    on_backends = KvLease.backend_id.in_(backend_ids)
    dead = session.scalars(select(KvLease.job_id).where(on_backends, _dead(now))).all()
    # Jobs before leases: a renewal that got its job first ends before we look again.
    locked = lock(session, dead)
    gone = delete(KvLease).where(on_backends, KvLease.job_id.in_(locked), _dead(now))
    job_ids = session.scalars(gone.returning(KvLease.job_id), execution_options=NO_SYNC).all()
    if not job_ids:
        return []
    was_running = (Job.id.in_(job_ids), Job.status == JobStatus.running)
    # Admission counts the attempts; a job that has had its last one fails here.
    reason = f"ran {max_attempts} times and its KV lease expired: its worker stopped renewing it"
    common = {"heartbeat_at": None}
    fail = update(Job).where(*was_running, Job.attempts >= max_attempts)
    fail = fail.values(status=JobStatus.failed, error_reason=reason, finished_at=now, **common)
    requeue = update(Job).where(*was_running)
    requeue = requeue.values(status=JobStatus.waiting_for_capacity, waiting_since=now, **common)
    failed = list(session.scalars(fail.returning(Job.id), execution_options=NO_SYNC))
    outbox.jobs_ended(session, failed, now)
    return [*failed, *session.scalars(requeue.returning(Job.id), execution_options=NO_SYNC)]
