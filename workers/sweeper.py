"""Re-dispatch documents whose worker went silent or whose message never left, and
jobs nobody polls for; reap expired KV leases on every backend; remove temp files
that crashed uploads and parses left in the blob store.

Runs in every worker's main process. Several sweepers may run at once: each
re-dispatch is guarded by a conditional update of `dispatched_at`, and the ingest
task's own claim makes a duplicate message a no-op anyway.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, aliased

from ingestion.capacity.priority import PRIORITY_STEPS
from service import ledger
from service.blobstore import BlobStore
from service.config import Settings
from service.db import retry_conflicts, rows_changed, write_transaction
from service.jobs.dispatch import priorities
from service.jobs.tree import fail_parent
from service.models import Document, DocumentStatus, Job, JobStatus, utcnow
from workers.ingest.claims import silent_parse

log = logging.getLogger(__name__)
# A message the broker still holds is redelivered by the broker; only after this
# long do we assume it was lost with a worker's prefetch and send another.
_REQUEUE_AFTER = timedelta(hours=1)
# The API dispatches right after inserting; give it that moment before stepping in.
_UNDISPATCHED_GRACE = timedelta(seconds=10)


def sweep(
    session: Session,
    settings: Settings,
    dispatch: Callable[[str], None],
    *,
    tenant_id: uuid.UUID | None = None,
) -> int:
    """Re-dispatch the documents that need it; with `tenant_id`, only that tenant's
    (a test in a shared database sweeps its own rows, nobody else's)."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    silent = and_(
        silent_parse(stale),
        or_(Document.dispatched_at.is_(None), Document.dispatched_at < stale),
    )
    lost = and_(
        Document.status == DocumentStatus.queued,
        or_(
            and_(Document.dispatched_at.is_(None), Document.created_at < now - _UNDISPATCHED_GRACE),
            Document.dispatched_at < now - _REQUEUE_AFTER,
        ),
    )
    due = select(Document.id, Document.dispatched_at).where(or_(silent, lost))
    if tenant_id is not None:
        due = due.where(Document.tenant_id == tenant_id)
    rows = session.execute(due.limit(500)).all()
    sent = 0
    for doc_id, seen in rows:
        if _take(session, Document, doc_id, seen):
            dispatch(str(doc_id))
            sent += 1
    if sent:
        log.warning("sweeper re-dispatched %d document(s)", sent)
    return sent


def sweep_jobs(
    session: Session,
    settings: Settings,
    dispatch: Callable[[str, int], object],
    tenant_id: uuid.UUID | None = None,
) -> int:
    """Reap expired leases (their jobs wait again), then send a task for each job
    that waits with no live poller, or is queued on a document that is now ready,
    at its tenant's priority (`service.jobs.dispatch.priorities`). With `tenant_id`,
    only that tenant's leases are reaped and its jobs failed or sent (a test's own)."""
    now = utcnow()
    ledger.expire(session, now, max_attempts=settings.max_job_attempts, tenant_id=tenant_id)
    _fail_broken_parents(session, now, tenant_id)
    stale = now - timedelta(seconds=settings.stale_after_s)
    old = now - timedelta(seconds=settings.job_redispatch_after_s)
    unpolled = and_(
        Job.status == JobStatus.waiting_for_capacity,
        or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale),
    )
    ready = select(Document.id).where(
        Document.status.in_([DocumentStatus.parsed, DocumentStatus.failed])
    )
    unplanned = and_(Job.status == JobStatus.queued, Job.document_id.in_(ready))
    due = (
        select(Job.id, Job.dispatched_at)
        .where(or_(unpolled, unplanned))
        .where(or_(Job.dispatched_at.is_(None), Job.dispatched_at < old))
        .limit(500)
    )
    if tenant_id is not None:
        due = due.where(Job.tenant_id == tenant_id)
    rows = session.execute(due).all()
    taken = [job_id for job_id, seen in rows if _take(session, Job, job_id, seen)]
    priority = priorities(session, taken)
    session.commit()
    for job_id in taken:
        dispatch(str(job_id), priority.get(job_id, PRIORITY_STEPS[-1]))
    sent = len(taken)
    if sent:
        log.warning("sweeper re-dispatched %d job(s)", sent)
    return sent


def _fail_broken_parents(session: Session, now: Any, tenant_id: uuid.UUID | None) -> None:
    """A request the ledger failed (too large, lease expired too often) had no task to
    take its map-reduce job down; do it here."""
    child = aliased(Job)
    broken = (
        select(child.id, child.error_reason)
        .select_from(Job)
        .join(child, child.parent_id == Job.id)
        .where(Job.status == JobStatus.running, child.status == JobStatus.failed)
    )
    if tenant_id is not None:
        broken = broken.where(Job.tenant_id == tenant_id)
    rows = session.execute(broken).all()
    for child_id, reason in rows:
        _fail_parent(session, child_id, now, reason)


@retry_conflicts
def _fail_parent(session: Session, child_id: uuid.UUID, now: Any, reason: str | None) -> None:
    with write_transaction(session):
        fail_parent(session, child_id, now, reason)


def _take(session: Session, model: type[Document | Job], row_id: uuid.UUID, seen: Any) -> bool:
    """Re-dispatch only if no other sweeper did since we read `seen`."""
    guard = model.dispatched_at.is_(None) if seen is None else model.dispatched_at == seen
    result = session.execute(
        update(model)
        .where(model.id == row_id, guard)
        .values(dispatched_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return rows_changed(result) == 1


def sweep_all(
    sessions: Callable[[], Session],
    settings: Settings,
    dispatch: Callable[[str], None],
    dispatch_job: Callable[[str, int], object] | None = None,
    *,
    tenant_id: uuid.UUID | None = None,
) -> None:
    """One round of the sweeper (documents, jobs, temp files), each in its own
    session; `workers/schedule.py` runs it every `sweep_interval_s`. A part that fails
    does not keep the others from running: the first failure is raised after them all,
    for the scheduler's error policy to log. `tenant_id` as for `sweep`."""

    def documents() -> None:
        with sessions() as session:
            sweep(session, settings, dispatch, tenant_id=tenant_id)

    def jobs() -> None:
        if dispatch_job is not None:
            with sessions() as session:
                sweep_jobs(session, settings, dispatch_job, tenant_id)

    def temp_files() -> None:
        BlobStore(settings.blobs).sweep_temp(settings.temp_upload_max_age_s)

    failure: Exception | None = None
    for part in (documents, jobs, temp_files):
        try:
            part()
        except Exception as exc:
            failure = failure or exc
    if failure is not None:
        raise failure
