"""What the ledger's property test does to jobs besides admitting and renewing them,
and the invariants it checks after every step.

The operations are the service's own: `service.jobs.lifecycle.cancel` (the API's
cancel), and a request ending the way `workers/jobs/run.py` ends one: in one
transaction, its lease released with its status and, for a request of a map-reduce
job, the fan-in (`service.jobs.tree.fan_in`) or, when it failed, the whole tree
ended (`service.jobs.tree.end_tree`).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ingestion.capacity.route_plan import (
    Chunk,
    DocTokens,
    MapStep,
    Plan,
    ReduceGroup,
    ReduceLevel,
    ReduceStep,
    Request,
)
from service import ledger
from service.db import retry_conflicts, write_transaction
from service.jobs import lifecycle, tree
from service.models import Job, JobStatus, KvLease, Result
from tests.ledger.conftest import World

# The code a request failed by its worker carries; the ledger's own failures (too large,
# expired too often) carry none, and leave the parent to the sweeper.
WORKER_FAILED = "test_request_failed"
_LIVE = (JobStatus.queued, JobStatus.waiting_for_capacity, JobStatus.running)


def _request(role: str, kv_bytes: int) -> Request:
    return Request(role, "test-model", 100, 16, kv_bytes, max(kv_bytes // 4, 1), ("b",))


def tree_plan(role: str, maps: list[int], fan_in: int, reduce_kv: int) -> Plan:
    """A map-reduce plan: a map request per entry of `maps` (its KV bytes), then levels
    of reduce requests, each combining up to `fan_in` inputs, up to one at the top."""
    chunks = [Chunk(i, i + 1, i + 1, 0, 1, 0, 1, 100, True) for i in range(len(maps))]
    steps = tuple(MapStep(c, _request(role, kv)) for c, kv in zip(chunks, maps, strict=True))
    levels: list[ReduceLevel] = []
    inputs = len(maps)
    while inputs > 1 or not levels:
        starts = range(0, inputs, fan_in)
        groups = tuple(
            ReduceGroup(s, min(s + fan_in, inputs) - 1, _request(role, reduce_kv)) for s in starts
        )
        levels.append(ReduceLevel(len(levels) + 1, groups))
        inputs = len(groups)
    return Plan(
        "map_reduce",
        16,
        (DocTokens(role, 100 * len(maps), True),),
        ((role, 30),),
        None,
        steps,
        tuple(levels),
    )


def start_tree(w: World, plan: Plan, now: datetime, seq: int) -> uuid.UUID:
    """A map-reduce job of `w`'s tenant, started on `plan`: its maps wait for KV, in
    line at `seq` among `w`'s single jobs (numbered 1, 2, ...), not behind them all."""
    with w.sessions() as s:
        parent = Job(
            tenant_id=w.tenant_id,
            document_id=w.doc,
            task="summarize",
            max_output_tokens=16,
            idempotency_key=uuid.uuid4().hex,
            status=JobStatus.queued,
        )
        s.add(parent)
        s.flush()
        tree.start(s, parent, plan, now, {i: 10.0 for i, _ in enumerate(plan.requests())})
        s.flush()
        s.execute(update(Job).where(Job.parent_id == parent.id).values(seq=seq))
        s.commit()
        return parent.id


@retry_conflicts
def succeed(s: Session, job_id: uuid.UUID, lease_id: uuid.UUID, now: datetime) -> bool:
    """The request's result stored, its lease released and its tree fanned in, in one
    transaction. False: it no longer held the lease (cancelled, expired), nothing stored."""
    with write_transaction(s):
        tree.lock_tree(s, job_id)
        released = ledger.release(
            s, job_id, now, JobStatus.succeeded, lease_id=lease_id, commit=False
        )
        if not released:
            return False
        s.add(Result(job_id=job_id, text=f"out of {job_id}", prompt_tokens=1, completion_tokens=1))
        s.flush()
        job = s.get(Job, job_id)
        assert job is not None
        s.refresh(job)
        if job.parent_id is not None:
            tree.fan_in(s, job, now, lambda r: 10.0)
    return True


@retry_conflicts
def fail(s: Session, job_id: uuid.UUID, lease_id: uuid.UUID, now: datetime) -> bool:
    """The request failed: its lease released and its whole tree ended failed, in one
    transaction. False: it no longer held the lease."""
    with write_transaction(s):
        tree.lock_tree(s, job_id, whole=True)
        failed = ledger.release(
            s,
            job_id,
            now,
            JobStatus.failed,
            lease_id=lease_id,
            commit=False,
            error_code=WORKER_FAILED,
            error_reason="the test failed it",
        )
        parent = s.scalar(select(Job.parent_id).where(Job.id == job_id))
        if failed and parent is not None:
            tree.fail_parent(s, job_id, now, "the test failed it")
    return failed


def cancel(s: Session, job_id: uuid.UUID) -> list[uuid.UUID]:
    """The API's cancel: the job and its requests, whatever they hold or wait for."""
    job = s.get(Job, job_id)
    assert job is not None
    return lifecycle.cancel(s, job)


def outcomes(w: World) -> list[str]:
    """What the example got to do, for Hypothesis' statistics: how its trees ended,
    how many reduces fan-in made, how many jobs were cancelled after an admission."""
    with w.sessions() as s:
        rows = s.execute(
            select(Job.parent_id, Job.role, Job.status, Job.step, Job.admitted_at).where(
                Job.tenant_id == w.tenant_id
            )
        ).all()
    trees = {r.parent_id for r in rows if r.parent_id}
    out = [f"tree {r.status.value}" for r in rows if r.role is None and r.parent_id is None]
    out += ["a reduce made by fan-in" for r in rows if isinstance(r.step, ReduceStep)]
    out += [
        f"{'a request' if r.parent_id in trees else 'a job'} cancelled after admission"
        for r in rows
        if r.status == JobStatus.cancelled and r.admitted_at is not None
    ]
    return sorted(set(out))


def _step_key(step: MapStep | ReduceStep | None) -> tuple[int, int]:
    assert step is not None, "a request of a tree has a step"
    return step.key


def violations(w: World, caps: dict[uuid.UUID, int]) -> list[str]:
    """Every invariant broken in one snapshot (a single statement) of `w`'s jobs, their
    leases and results. Empty: all hold."""
    counted = select(func.count()).where(Result.job_id == Job.id)
    results = counted.scalar_subquery().label("results")
    stmt = (
        select(
            Job.id,
            Job.parent_id,
            Job.status,
            Job.role,
            Job.step,
            Job.error_code,
            KvLease.backend_id,
            KvLease.kv_bytes,
            results,
        )
        .outerjoin(KvLease, KvLease.job_id == Job.id)
        .where(Job.tenant_id == w.tenant_id)
    )
    with w.sessions() as s:
        rows = s.execute(stmt).all()
    out: list[str] = []
    leased: dict[uuid.UUID, int] = defaultdict(int)
    status = {r.id: r.status for r in rows}
    kids: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for r in rows:
        if r.backend_id is not None:
            leased[r.backend_id] += r.kv_bytes
        # A lease exists iff its job runs; a map-reduce job (no role) never holds one.
        if (r.backend_id is not None) != (r.role is not None and r.status == JobStatus.running):
            out.append(f"job {r.id} is {r.status.value} with lease on {r.backend_id}")
        if r.results != (1 if r.status == JobStatus.succeeded else 0):
            out.append(f"job {r.id} is {r.status.value} with {r.results} result(s)")
        if r.parent_id is not None:
            kids[r.parent_id].append(r)
    for backend_id, n in leased.items():
        if n > caps[backend_id]:
            out.append(f"backend {backend_id}: {n} B leased of {caps[backend_id]}")
    for parent_id, children in kids.items():
        out += _tree_violations(parent_id, status[parent_id], children)
    return out


def _tree_violations(parent_id: uuid.UUID, state: JobStatus, children: list[Any]) -> list[str]:  # noqa: C901
    out = []
    by_key: dict[tuple[int, int], Any] = {}
    for c in children:
        key = _step_key(c.step)
        if key in by_key:
            out.append(f"tree {parent_id}: request {key} twice")
        by_key[key] = c
        if state not in _LIVE and c.status in _LIVE:
            out.append(f"tree {parent_id} is {state.value}, its request {key} {c.status.value}")
        if state == JobStatus.succeeded and c.status != JobStatus.succeeded:
            out.append(f"tree {parent_id} succeeded, its request {key} {c.status.value}")
        if c.status == JobStatus.cancelled and state != JobStatus.cancelled:
            out.append(f"tree {parent_id} is {state.value}, its request {key} cancelled")
        if c.error_code == WORKER_FAILED and state != JobStatus.failed:
            out.append(f"tree {parent_id} is {state.value}, its request {key} failed")
    # Fan-in: a reduce request exists only once every one of its inputs has succeeded.
    for (level, _), c in by_key.items():
        if level == 0:
            continue
        assert isinstance(c.step, ReduceStep)
        for i in range(c.step.first, c.step.last + 1):
            source = by_key.get((level - 1, i))
            if source is None or source.status != JobStatus.succeeded:
                out.append(f"tree {parent_id}: reduce {(level, c.step.group)} before input {i}")
    return out
