"""Sending a job's task, for the API, the worker (map-reduce requests), ingest and
the sweeper: with a broker priority from its tenant's backlog (`ingestion.capacity.priority`)."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ingestion.capacity import admission
from ingestion.capacity.priority import (
    BATCH_STEPS,
    INTERACTIVE_STEPS,
    PRIORITY_STEPS,
    backlog_cap,
    task_priority,
)
from service.config import get_settings
from service.models import Batch, Job, JobStatus, utcnow
from service.queue import dispatch_job

log = logging.getLogger(__name__)

# What counts in a tenant's backlog: jobs and map-reduce requests not yet holding a
# lease (a map-reduce parent is `running` while its requests wait, so it does not).
BACKLOG = (JobStatus.queued, JobStatus.waiting_for_capacity)


def priorities(
    session: Session, job_ids: Sequence[uuid.UUID], policy: admission.Policy | None = None
) -> dict[uuid.UUID, int]:
    """Each job's task priority, from its tenant's backlog of the job's class
    (interactive or batch), counted once per tenant and class however many of its jobs
    are sent together; the aging bounds are `policy`'s (default: the settings')."""
    if not job_ids:
        return {}
    policy = policy or _policy()
    since = func.coalesce(Job.waiting_since, Job.created_at)
    is_batch = Job.batch_id.is_not(None)
    rows = session.execute(
        select(Job.id, Job.tenant_id, since, is_batch, Batch.expires_at)
        .outerjoin(Batch, Batch.id == Job.batch_id)
        .where(Job.id.in_(job_ids))
    ).all()
    classes = {(tenant_id, bool(batch)) for _, tenant_id, _, batch, _ in rows}
    backlog = {(t, b): _backlog(session, t, b) for t, b in classes}
    now = utcnow()
    return {
        job_id: task_priority(
            backlog[(tenant_id, bool(batch))],
            _age_s(now, waited_from),
            bool(batch),
            policy.max_head_wait_s,
            policy.batch_max_wait_s,
            math.inf if expires is None else -_age_s(now, expires),
        )
        for job_id, tenant_id, waited_from, batch, expires in rows
    }


def _backlog(session: Session, tenant_id: uuid.UUID, batch: bool) -> int:
    """The tenant's backlog of one class, counted up to `backlog_cap` only: a batch
    sends each of its thousands of jobs, and a full count per send grew with the batch
    (quadratic over it) for a priority that stops changing at the cap."""
    of_class = Job.batch_id.is_not(None) if batch else Job.batch_id.is_(None)
    waiting = (
        select(Job.id)
        .where(Job.tenant_id == tenant_id, Job.status.in_(BACKLOG), of_class)
        .limit(backlog_cap(BATCH_STEPS if batch else INTERACTIVE_STEPS))
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(waiting)) or 0)


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
    if sent:
        now = utcnow()
        rows = [{"id": j, "dispatched_at": now, "task_id": sent[j]} for j in sorted(sent)]
        session.execute(update(Job), rows)  # by primary key, one statement, in that order
    session.commit()
