"""The `run_job` task: plan a job if needed, wait for KV-cache room, run it.

One task per job (and per map or reduce request of a map-reduce job). The task
polls the KV ledger for its job's admission, beating on the job row so admission
knows a task is there to run it (`ledger.try_admit(ready_after=...)`); after
`admission_wait_s` it queues itself again and frees its worker slot. Only the task
whose name is on the job (`jobs.worker`) runs it, so a duplicate message is a no-op.

Durability: acks_late + reject_on_worker_lost hand the message back when a worker
process dies; a dead worker's lease expires and the ledger requeues its job; the
sweeper sends a new task for waiting jobs nobody polls for.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ingestion.capacity import admission
from service import ledger, logs
from service.config import Settings, get_settings
from service.db import get_sessionmaker, retry_conflicts, rows_changed, write_transaction
from service.jobs import dispatch, tree
from service.jobs.lifecycle import plan_and_start, still_unplanned
from service.models import FINAL, Backend, Document, DocumentStatus, Job, JobStatus, utcnow
from service.queue import JOB_TASK, app
from workers.jobs import reasons as public_reasons
from workers.jobs import run as job_run
from workers.task_options import durable_task, worker_name

log = logging.getLogger(__name__)


@app.task(  # type: ignore[untyped-decorator]
    **durable_task(JOB_TASK)
)
def run_job(self: Any, job_id: str) -> dict[str, Any]:
    worker = worker_name(self)
    try:
        return drive(uuid.UUID(job_id), worker, get_settings())
    except SoftTimeLimitExceeded:
        # Out of time while planning or polling (a running request fails with `timeout`
        # in job_run): hand the job to a fresh task rather than leave it to the sweeper.
        log.warning("job %s: task time limit reached before it ran; queued again", job_id)
        # None: admitted in the meantime, with no time left to run it here; its lease
        # expires and the ledger queues it again.
        return _requeue(uuid.UUID(job_id), worker) or {"status": "running", "skipped": True}


def send(job_ids: list[uuid.UUID]) -> None:
    with get_sessionmaker()() as session:
        dispatch.send(session, job_ids)


def _claim(session: Session, job_id: uuid.UUID, worker: str, settings: Settings) -> bool:
    """Become the job's poller (and so its runner) unless a live task already is."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    stmt = update(Job).where(
        Job.id == job_id,
        Job.status == JobStatus.waiting_for_capacity,
        or_(
            Job.worker.is_(None),
            Job.worker == worker,
            Job.heartbeat_at.is_(None),
            Job.heartbeat_at < stale,
        ),
    )
    ok = rows_changed(session.execute(stmt.values(worker=worker, heartbeat_at=now))) == 1
    session.commit()
    return ok


@retry_conflicts
def _prepare(session: Session, settings: Settings, job: Job) -> dict[str, Any] | None:
    """Plan a queued job once its document is parsed. None: go on with the job (also
    when another task planned it first)."""
    doc = session.get(Document, job.document_id) if job.document_id else None
    now = utcnow()
    if doc is None or doc.status == DocumentStatus.failed:
        why = "was deleted" if doc is None else f"failed to parse: {doc.error_reason}"
        with write_transaction(session):  # rolled back on error, so a retry starts clean
            tree.end_tree(
                session,
                [job.id],
                JobStatus.failed,
                now,
                code="document_failed",
                reason=f"the document {why}",
            )
        return {"status": "failed"}
    if doc.status != DocumentStatus.parsed:
        return {"status": "queued", "waiting_for": "document"}  # ingest sends us again
    to_send: list[uuid.UUID] | None = None
    with write_transaction(session):
        try:
            to_send = plan_and_start(session, settings, job, doc, now)
        except ValueError as exc:
            if still_unplanned(session, job):
                why = str(exc)
                tree.end_tree(session, [job.id], JobStatus.failed, now, code="bad_budget",
                              reason=why)  # fmt: skip
                to_send = []
    if to_send is None:
        return None  # planned (or ended) by someone else meanwhile: look again
    if job.status == JobStatus.running:  # a map-reduce parent: its requests do the work
        send(to_send)
        return {"status": "running", "requests": len(to_send)}
    return None


@retry_conflicts
def _after_final(session: Session, job: Job) -> dict[str, Any]:
    # A request that failed outside a run (the ledger failed it: too large, or its
    # lease expired too often) takes its map-reduce job down with it.
    if job.status == JobStatus.failed and job.parent_id is not None:
        with write_transaction(session):
            tree.fail_parent(session, job.id, utcnow(), job.error_reason)
    return {"status": job.status.value}


def drive(job_id: uuid.UUID, worker: str, settings: Settings) -> dict[str, Any]:  # noqa: C901
    sessions = get_sessionmaker()
    deadline = time.monotonic() + settings.admission_wait_s
    while True:
        with sessions() as session:
            job = session.get(Job, job_id)
            if job is None:
                return {"status": "deleted"}
            # The rest of the task's lines name its document and batch too (dropped
            # with the task's own ids when it ends: workers/app.py).
            logs.bind(document_id=job.document_id, batch_id=job.batch_id)
            if job.status in FINAL:
                return _after_final(session, job)
            if job.status == JobStatus.queued:
                early = _prepare(session, settings, job)
                if early is not None:
                    return early
                continue
            if job.status == JobStatus.running:
                parent = job.plan is not None and job.plan.kind == "map_reduce"
                if job.worker != worker or parent:
                    return {"status": "running", "skipped": True}
                role = None
            else:
                if not _claim(session, job_id, worker, settings):
                    return {"status": job.status.value, "skipped": True, "reason": "polled"}
                role = job.role
        if role is None:
            job_run.run(sessions, settings, job_id, send)
            deadline = time.monotonic() + settings.admission_wait_s
            continue
        now = utcnow()
        with sessions() as session:
            ledger.try_admit(
                session,
                role,
                now,
                settings.lease_ttl_s,
                policy=admission_policy(settings),
                max_attempts=settings.max_job_attempts,
                ready_after=now - timedelta(seconds=settings.stale_after_s),
            )
            job = session.get(Job, job_id)
            admitted = job is not None and job.status != JobStatus.waiting_for_capacity
            # Same session: the poll loop is hot, one connection per round is enough.
            if not admitted and _no_backend_for_too_long(session, job_id, role, settings):
                return {"status": "failed", "reason": "no backend"}
        if admitted:
            continue
        if time.monotonic() > deadline:
            requeued = _requeue(job_id, worker)
            if requeued is not None:
                return requeued
            continue  # admitted (or ended, or taken over) just now: see what to do
        time.sleep(settings.admission_poll_s)


def admission_policy(settings: Settings) -> admission.Policy:
    return admission.Policy(
        batch_max_wait_s=settings.batch_max_wait_s,
        tenant_max_running=settings.tenant_max_running_jobs,
        tenant_max_kv_share=settings.tenant_max_kv_share,
    )


@retry_conflicts
def _no_backend_for_too_long(
    session: Session, job_id: uuid.UUID, role: str, settings: Settings
) -> bool:
    """Fail a job that has waited `backend_down_timeout_s` with no replica of its role
    up (a mismatched one is not healthy either): better a clear reason than a job that
    waits for ever."""
    now = utcnow()
    rows = session.execute(select(Backend.healthy).where(Backend.role == role)).all()
    if any(r.healthy for r in rows):
        return False
    job = session.get(Job, job_id)
    since = job.waiting_since if job is not None else None
    if since is None or (now - since).total_seconds() < settings.backend_down_timeout_s:
        return False
    # Tenants read the reason: replica ids, not URLs or their errors (logged instead).
    errors = public_reasons.none_up(session, job_id, role)
    reason = (
        f"no {role} backend was up and usable for {settings.backend_down_timeout_s:.0f} s "
        f"while the job waited ({errors})"
    )
    with write_transaction(session):
        moved = tree.end_tree(
            session, [job_id], JobStatus.failed, now, code="backend_down", reason=reason
        )
    if moved and job is not None and job.parent_id is not None:
        session.refresh(job)
        _after_final(session, job)
    return bool(moved)


def _requeue(job_id: uuid.UUID, worker: str) -> dict[str, Any] | None:
    """Give the slot back: queue a new task, at its tenant's priority (behind tasks of
    tenants with smaller backlogs and its equals), and let it poll. None:
    the job is no longer this task's to wait for (admission placed it since the last
    poll, or it ended, or another task took it over), and nothing was sent."""
    with get_sessionmaker()() as session:
        stmt = update(Job).where(
            Job.id == job_id, Job.worker == worker, Job.status == JobStatus.waiting_for_capacity
        )
        # With the beat cleared, admission no longer places the job (`ready_after`).
        gave_up = rows_changed(session.execute(stmt.values(heartbeat_at=None))) == 1
        session.commit()
    if not gave_up:
        return None
    send([job_id])
    return {"status": "waiting_for_capacity", "requeued": True}
