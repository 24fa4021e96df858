"""What admission reads of the waiting jobs: one query per decision for the jobs the
policy sees (with their batch's expiry), one for the replicas that last served
their documents and one for those that last served their chat prefixes."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, aliased

from ingestion.capacity import admission, prefix
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


def last_served(session: Session, role: str, jobs: Sequence[Any]) -> dict[str, str]:
    """The replica that most recently ran a job of each affinity (`affinity`) among
    `jobs` without a preferred replica: its prefix cache may hold the document, or the
    chat prefix. One query per kind of affinity, whatever the number of jobs."""
    unplaced = [j for j in jobs if j.preferred_backend_id is None]
    on_docs = [j.id for j in unplaced if j.document_id is not None]
    keyed = [j.id for j in unplaced if j.document_id is None and j.prefix_key is not None]
    served = {str(d): str(b) for d, b in _newest_served(session, role, "document_id", on_docs)}
    for key, backend in _newest_served(session, role, "prefix_key", keyed):
        served[prefix.affinity(key)] = str(backend)
    return served


def _newest_served(
    session: Session, role: str, shared: str, job_ids: list[uuid.UUID]
) -> Sequence[tuple[Any, uuid.UUID]]:
    """(value of the `shared` column, replica of its newest admitted job on `role`) for
    the values the jobs `job_ids` have. A batch may hold thousands of jobs of one
    document or prefix: each value's newest is one backward step in its index
    (ix_jobs_document_admitted, ix_jobs_prefix_key_admitted), not a read of them all."""
    if not job_ids:
        return []
    # The values as rows to look each one up from: the waiting jobs' own, by primary key.
    mine = getattr(Job, shared)
    keys = select(mine.label("key")).where(Job.id.in_(job_ids), mine.is_not(None))
    values = keys.distinct().subquery()
    ran = aliased(Job)
    newest = (
        select(ran.backend_id)
        .where(getattr(ran, shared) == values.c.key, ran.admitted_at.is_not(None))
        .where(ran.role == role, ran.backend_id.is_not(None))
        .order_by(ran.admitted_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = session.execute(select(values.c.key, newest.label("backend_id")))
    return [(k, b) for k, b in rows if b is not None]


def affinity(job: Any) -> str | None:
    """What the jobs that share a replica's prefix cache share: the document, else the
    chat prefix key (`ingestion.capacity.prefix`); None for a chat job without one."""
    if job.document_id is not None:
        return str(job.document_id)
    return None if job.prefix_key is None else prefix.affinity(job.prefix_key)


def waiting_job(job: Any, served: dict[str, str]) -> admission.WaitingJob:
    preferred = job.preferred_backend_id
    expires = job.batch_expires_at
    key = affinity(job)
    return admission.WaitingJob(
        id=str(job.id),
        seq=job.seq,
        kv_bytes=job.kv_bytes,
        waiting_since=(job.waiting_since or job.created_at).timestamp(),
        est_duration_s=math.inf if job.est_duration_s is None else job.est_duration_s,
        preferred_replica=str(preferred) if preferred else served.get(key) if key else None,
        tenant=str(job.tenant_id),
        batch=job.batch_id is not None,
        expires_at=math.inf if expires is None else expires.timestamp(),
        affinity=key,
    )
