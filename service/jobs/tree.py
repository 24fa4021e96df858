"""A job's requests as rows: one job for a single request, or a parent whose map and
reduce requests are child jobs, each admitted by the KV ledger on its own.

The join of a map-reduce lives here, in the database, not in a Celery chord: the
transaction that stores a child's result also creates the reduce requests whose
inputs are now all done (or finishes the parent). A chord keeps its counter in the
result backend, and a broker restart or a lost worker would leave the reduce unrun;
here the join is exactly as durable as the results it waits for.

Every function here changes rows and leaves the commit to the caller, so a result, a
lease release and the fan-in land in one transaction. Rows are locked in the order
`service/ledger/` sets out: a map-reduce job before its requests, jobs of one level
by id, their leases last; `lock` takes job locks that way.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session

from ingestion.capacity.route_plan import Plan, ReduceStep, Step
from service.db import NO_SYNC
from service.models import FINAL, Job, JobStatus, KvLease, Result
from service.webhooks import outbox


def _lock_where(session: Session, where: ColumnElement[bool]) -> list[uuid.UUID]:
    # Postgres locks in the ORDER BY's order. NO KEY UPDATE: a lease, a result or a
    # request inserted with a reference to the job is not held up by it.
    stmt = select(Job.id).where(where).order_by(Job.id).with_for_update(key_share=True)
    return list(session.scalars(stmt))


def lock(session: Session, job_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
    """Row-lock these jobs (of one level of a tree) by id; returns those that exist.
    A caller that locks a request and its map-reduce job locks the job first."""
    ids = set(job_ids)
    return _lock_where(session, Job.id.in_(ids)) if ids else []


def lock_tree(session: Session, job_id: uuid.UUID, *, whole: bool = False) -> None:
    """Lock a request before touching it and its map-reduce job: the job first, then
    the request, or with `whole` every request of the job (to end them all)."""
    parent_id = session.scalar(select(Job.parent_id).where(Job.id == job_id))
    if parent_id is None:
        lock(session, [job_id])
        return
    lock(session, [parent_id])
    _lock_where(session, Job.parent_id == parent_id if whole else Job.id == job_id)


def _waiting_child(parent: Job, key: str, step: Step, est: float) -> Job:
    req = step.request
    return Job(
        id=uuid.uuid4(),
        tenant_id=parent.tenant_id,
        document_id=parent.document_id,
        batch_id=parent.batch_id,
        parent_id=parent.id,
        task=parent.task,
        params=parent.params,
        max_output_tokens=req.output_tokens,
        idempotency_key=f"{parent.id}/{key}",
        status=JobStatus.waiting_for_capacity,
        step=step,
        role=req.role,
        kv_bytes=req.kv_bytes,
        kv_blocks=req.kv_blocks,
        est_duration_s=est,
    )


def start(
    session: Session, job: Job, plan: Plan, now: datetime, est: dict[int, float]
) -> list[uuid.UUID]:
    """Put a planned job to work: a single request waits for KV; a map-reduce job's
    map requests become waiting children. Returns the jobs whose tasks to send.
    `est[i]` is request i's expected duration (`Plan.requests()` order)."""
    job.plan = plan
    if plan.request is not None:
        req = plan.request
        job.role, job.kv_bytes, job.kv_blocks = req.role, req.kv_bytes, req.kv_blocks
        job.est_duration_s = est[0]
        job.status, job.waiting_since = JobStatus.waiting_for_capacity, now
        return [job.id]
    job.status, job.started_at = JobStatus.running, now
    job.progress = {
        "map_total": len(plan.map),
        "map_done": 0,
        "reduce_done": 0,
        "reduce_total": sum(len(lv.groups) for lv in plan.reduce),
    }
    children = [_waiting_child(job, f"map/{i}", s, est[i]) for i, s in enumerate(plan.map)]
    for child in children:
        child.waiting_since = now
        session.add(child)
    return [c.id for c in children]


def _stage_key(job: Job) -> tuple[int, int]:
    assert job.step is not None, "only a map-reduce job's requests have a place in it"
    return job.step.key


def children(session: Session, parent_id: uuid.UUID) -> list[Job]:
    # populate_existing: the caller may hold these rows from before its own updates.
    stmt = select(Job).where(Job.parent_id == parent_id)
    rows = session.scalars(stmt.execution_options(populate_existing=True))
    return sorted(rows, key=_stage_key)


def fan_in(
    session: Session, child: Job, now: datetime, est_of: Any
) -> tuple[list[uuid.UUID], bool]:
    """After `child` succeeded (its result added in this transaction): create the
    reduce requests whose inputs are all done, or finish the parent when `child` was
    the last request. Returns (jobs to dispatch, parent finished)."""
    parent = session.get(Job, child.parent_id, with_for_update={"key_share": True})
    if parent is None or parent.status != JobStatus.running or parent.plan is None:
        return [], False
    plan = parent.plan
    kids = children(session, parent.id)
    done = {_stage_key(k) for k in kids if k.status == JobStatus.succeeded}
    level = _stage_key(child)[0]
    progress = dict(parent.progress or {})
    progress["map_done" if level == 0 else "reduce_done"] = sum(
        1
        for k in kids
        if k.status == JobStatus.succeeded and (_stage_key(k)[0] == 0) == (level == 0)
    )
    parent.progress = progress
    last_level = len(plan.reduce)
    if level == last_level:  # the last request of the plan (one map chunk, or the top reduce)
        _finish_parent(session, parent, child, now)
        return [], True
    existing = {_stage_key(k) for k in kids}
    new: list[uuid.UUID] = []
    for g, group in enumerate(plan.reduce[level].groups):
        key = (level + 1, g)
        ready = all((level, i) in done for i in range(group.first, group.last + 1))
        if key in existing or not ready:
            continue
        step = ReduceStep(level + 1, g, group.first, group.last, group.request)
        job = _waiting_child(parent, f"reduce/{level + 1}/{g}", step, est_of(group.request))
        job.waiting_since = now
        session.add(job)
        new.append(job.id)
    return new, False


def _finish_parent(session: Session, parent: Job, last: Job, now: datetime) -> None:
    result = session.scalar(select(Result).where(Result.job_id == last.id))
    assert result is not None, "fan_in runs after the child's result is added"
    session.add(
        Result(
            job_id=parent.id,
            text=result.text,
            data=result.data,
            warnings=result.warnings,
            model=result.model,
            backend_url=result.backend_url,
            request_id=result.request_id,
            prompt_tokens=_sum(session, parent.id, Result.prompt_tokens),
            completion_tokens=_sum(session, parent.id, Result.completion_tokens),
        )
    )
    parent.status, parent.finished_at = JobStatus.succeeded, now
    session.flush()
    outbox.jobs_ended(session, [parent.id], now)


def _sum(session: Session, parent_id: uuid.UUID, column: Any) -> int | None:
    values = session.scalars(
        select(column).join(Job, Job.id == Result.job_id).where(Job.parent_id == parent_id)
    ).all()
    return None if any(v is None for v in values) else sum(values)


def end_tree(
    session: Session,
    job_ids: Sequence[uuid.UUID],
    status: JobStatus,
    now: datetime,
    *,
    code: str | None = None,
    reason: str | None = None,
) -> list[uuid.UUID]:
    """Move these jobs and their children that are not final yet to `status`
    (failed or cancelled), deleting their KV leases in the same transaction (the
    ledger's rule: a lease exists only while its job runs). Returns the jobs moved."""
    ids = lock(session, job_ids)
    # Requests are added only under their job's lock (`start`, `fan_in`), so with the
    # jobs locked this is all of them.
    ids += _lock_where(session, Job.parent_id.in_(ids)) if ids else []
    moved = list(
        session.scalars(
            update(Job)
            .where(Job.id.in_(ids), Job.status.not_in(FINAL))
            .values(
                status=status,
                finished_at=now,
                heartbeat_at=None,
                error_code=code,
                error_reason=reason,
            )
            .returning(Job.id),
            execution_options=NO_SYNC,
        )
    )
    if moved:
        session.execute(delete(KvLease).where(KvLease.job_id.in_(moved)), execution_options=NO_SYNC)
        outbox.jobs_ended(session, moved, now)
    return moved


def fail_parent(
    session: Session, child_id: uuid.UUID, now: datetime, reason: str | None
) -> list[uuid.UUID]:
    """A request failed (for `reason`): its map-reduce job fails with it, and the job's
    other requests end, their leases released. Whoever saw the failure calls this: the
    run that failed it, the task that finds it failed by the ledger, the sweeper for
    one no task saw. Returns the jobs moved (none: no parent, or it already ended)."""
    row = session.execute(select(Job.parent_id, Job.step).where(Job.id == child_id)).one_or_none()
    if row is None or row.parent_id is None:
        return []
    what = row.step.stage if row.step is not None else "request"
    return end_tree(
        session,
        [row.parent_id],
        JobStatus.failed,
        now,
        code=f"{what}_failed",
        reason=f"a {what} request failed: {reason}",
    )


def group_pages(plan: Plan, level: int, group: int) -> tuple[int, int]:
    """The pages a request covers: a map chunk's (level 0) or a reduce group's."""
    if level == 0:
        chunk = plan.map[group].chunk
        return chunk.first_page, chunk.last_page
    g = plan.reduce[level - 1].groups[group]
    return group_pages(plan, level - 1, g.first)[0], group_pages(plan, level - 1, g.last)[1]
