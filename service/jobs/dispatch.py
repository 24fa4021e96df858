"""Sending a job's task, for the API, the worker (map-reduce requests), ingest and
the sweeper: with a broker priority from its tenant's backlog (`ingestion.capacity.priority`)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from ingestion.capacity import admission
from ingestion.capacity.priority import PRIORITY_STEPS, task_priority
from service.config import get_settings
from service.models import Job, JobStatus, utcnow
from service.queue import dispatch_job

log = logging.getLogger(__name__)

# What counts in a tenant's backlog: jobs and map-reduce requests not yet holding a
# lease (a map-reduce parent is `running` while its requests wait, so it does not).
BACKLOG = (JobStatus.queued, JobStatus.waiting_for_capacity)


def priorities(
    session: Session, job_ids: Sequence[uuid.UUID], policy: admission.Policy | None = None
) -> dict[uuid.UUID, int]:
    """Each job's task priority, from its tenant's backlog of the job's class
    (interactive or batch) counted in one query; the aging bounds are `policy`'s
    (default: the settings')."""
    if not job_ids:
        return {}
    policy = policy or _policy()
    other = aliased(Job)
    tenants = select(Job.tenant_id).where(Job.id.in_(job_ids))
    # Counted once per tenant and class, however many of its jobs are sent together.
    in_batch = other.batch_id.is_not(None).label("in_batch")
    backlog = (
        select(other.tenant_id, in_batch, func.count().label("n"))
        .where(other.tenant_id.in_(tenants), other.status.in_(BACKLOG))
        .group_by(other.tenant_id, in_batch)
        .subquery()
    )
    since = func.coalesce(Job.waiting_since, Job.created_at)
    is_batch = Job.batch_id.is_not(None)
    stmt = (
        select(Job.id, func.coalesce(backlog.c.n, 0), since, is_batch)
        .outerjoin(
            backlog, (backlog.c.tenant_id == Job.tenant_id) & (backlog.c.in_batch == is_batch)
        )
        .where(Job.id.in_(job_ids))
    )
    rows = session.execute(stmt).all()
    now = utcnow()
    return {
        job_id: task_priority(
            n,
            _age_s(now, waited_from),
            bool(batch),
            policy.max_head_wait_s,
            policy.batch_max_wait_s,
        )
        for job_id, n, waited_from, batch in rows
    }


def _policy() -> admission.Policy:
    return admission.Policy(batch_max_wait_s=get_settings().batch_max_wait_s)


def _age_s(now: datetime, since: datetime | None) -> float:
    if since is None:
        return 0.0
    if since.tzinfo is None:  # SQLite hands back naive UTC
        since = since.replace(tzinfo=now.tzinfo)
    return (now - since).total_seconds()


def send(session: Session, job_ids: Sequence[uuid.UUID]) -> None:
    """Queue the tasks of committed jobs and record when and which. A failure here
    loses nothing: the worker's sweeper sends the tasks of jobs nobody polls for."""
    priority = priorities(session, job_ids)
    sent: dict[uuid.UUID, str] = {}
    for job_id in job_ids:
        try:
            sent[job_id] = dispatch_job(str(job_id), priority.get(job_id, PRIORITY_STEPS[-1]))
        except Exception:
            log.exception("could not queue job %s; the sweeper will", job_id)
    # Recorded in id order, the ledger's lock order (`service/ledger/`): the requests
    # of a map-reduce job may be being cancelled meanwhile.
    for job_id in sorted(sent):
        stmt = update(Job).where(Job.id == job_id)
        session.execute(stmt.values(dispatched_at=utcnow(), task_id=sent[job_id]))
    session.commit()
