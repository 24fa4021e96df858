"""What admission reads of the waiting jobs: one query per decision for the jobs the
policy sees (with their batch's expiry), one for the replicas that last served
their documents."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ingestion.capacity import admission
from service.models import Batch, Job, JobStatus

_WAITING = JobStatus.waiting_for_capacity


def candidates(
    session: Session,
    role: str,
    now: datetime,
    policy: admission.Policy,
    ready_after: datetime | None,
    max_scan: int,
    per_tenant: int,
) -> Sequence[Any]:
    """The role's waiting jobs the policy sees: each tenant's first `per_tenant` in
    the policy's order within a tenant (`admission.order.queue_key`: interactive and
    aged batch jobs by arrival, then the other batch jobs by expiry), ranked so that
    a full scan still holds every tenant's first."""
    # Table rows, not ORM objects: the caller's identity map must not keep a
    # stale copy of the jobs this transaction moves.
    since = func.coalesce(Job.waiting_since, Job.created_at)
    batch_aged = now - timedelta(seconds=policy.batch_max_wait_s)
    # 0: interactive, or a batch job aged past its bound; 1: the other batch jobs,
    # ordered by their batch's expiry (null for class 0, so there arrival decides).
    unaged_batch = Job.batch_id.is_not(None) & (since >= batch_aged)
    cls = case((unaged_batch, 1), else_=0)
    expiry = case((unaged_batch, Batch.expires_at), else_=None)
    # Written out, not NULLS LAST: SQLite puts nulls first.
    order = (cls, expiry.is_(None), expiry, Job.seq, Job.id)
    rank = func.row_number().over(partition_by=Job.tenant_id, order_by=order)
    waiting = (
        select(
            Job.__table__,
            Batch.expires_at.label("batch_expires_at"),
            rank.label("tenant_rank"),
        )
        .outerjoin(Batch, Batch.id == Job.batch_id)
        .where(Job.role == role, Job.status == _WAITING, Job.kv_bytes.is_not(None))
    )
    if ready_after is not None:
        waiting = waiting.where(Job.heartbeat_at > ready_after)
    ranked = waiting.subquery()
    stmt = select(ranked).where(ranked.c.tenant_rank <= per_tenant)
    stmt = stmt.order_by(ranked.c.tenant_rank, ranked.c.seq, ranked.c.id).limit(max_scan)
    return session.execute(stmt).all()


def last_served(session: Session, role: str, jobs: Sequence[Any]) -> dict[uuid.UUID, str]:
    """The replica that most recently ran each document: its prefix cache may hold it."""
    docs = {j.document_id for j in jobs if j.preferred_backend_id is None}
    if not docs:
        return {}
    rows = session.execute(
        select(Job.document_id, Job.backend_id)
        .where(Job.document_id.in_(docs), Job.role == role, Job.backend_id.is_not(None))
        .where(Job.admitted_at.is_not(None))
        .order_by(Job.admitted_at)
    )
    return {doc: str(backend) for doc, backend in rows if doc is not None}


def waiting_job(job: Any, served: dict[uuid.UUID, str]) -> admission.WaitingJob:
    preferred = job.preferred_backend_id
    expires = job.batch_expires_at
    return admission.WaitingJob(
        id=str(job.id),
        seq=job.seq,
        kv_bytes=job.kv_bytes,
        waiting_since=(job.waiting_since or job.created_at).timestamp(),
        est_duration_s=math.inf if job.est_duration_s is None else job.est_duration_s,
        preferred_replica=str(preferred) if preferred else served.get(job.document_id),
        tenant=str(job.tenant_id),
        batch=job.batch_id is not None,
        expires_at=math.inf if expires is None else expires.timestamp(),
        affinity=None if job.document_id is None else str(job.document_id),
    )
