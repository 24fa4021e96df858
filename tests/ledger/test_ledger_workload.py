"""The ledger's property test: concurrent workers on a real database admit, renew,
finish, fail, give back and cancel single jobs and map-reduce trees, crash, and let
leases run out. After every step no backend is over-committed, a lease exists
exactly while its job runs, an ended job holds none, a tree ends whole, and a reduce
request appears only once its inputs are done; at the end nothing is leaked and the
queue drains."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service import ledger
from service.models import Job, JobStatus, KvLease
from tests.ledger.conftest import World, at
from tests.ledger.workload import (
    WORKER_FAILED,
    cancel,
    fail,
    outcomes,
    start_tree,
    succeed,
    tree_plan,
    violations,
)

TTL = 30.0

HELD = st.integers(0, 7)  # which of the leases a worker holds it ends
OPS = st.one_of(
    st.just(("admit",)),
    st.just(("renew",)),
    st.tuples(st.just("finish"), st.just(JobStatus.succeeded), HELD),
    st.tuples(st.just("finish"), st.just(JobStatus.waiting_for_capacity), HELD),
    st.tuples(st.just("fail"), HELD),
    # A job or a tree, in any state; twice as likely as each other step.
    st.tuples(st.just("cancel"), st.integers(0, 100)),
    st.tuples(st.just("cancel"), st.integers(0, 100)),
    st.just(("crash",)),
    st.tuples(st.just("tick"), st.floats(1, 40)),  # TTL is 30: leases do run out
    st.just(("expire",)),
)
SIZES = st.integers(1, 60) | st.integers(1, 120)  # now and then one fits nowhere
# A tree: its maps' KV bytes, how many inputs a reduce takes (fan-in), a reduce's bytes,
# and its place in line among the single jobs. Its requests fit every backend: a tree
# with one too large is left to the sweeper, and would rarely get to end.
FITS = st.integers(1, 50)
TREES = st.tuples(
    st.lists(FITS, min_size=2, max_size=4), st.integers(2, 3), FITS, st.integers(0, 6)
)


@st.composite
def workloads(draw: st.DrawFn) -> Any:
    caps = draw(st.lists(st.integers(50, 100), min_size=1, max_size=3))
    ends = st.sampled_from([None, 2.0, 10.0, 60.0])
    jobs = draw(st.lists(st.tuples(SIZES, ends), min_size=1, max_size=6))
    trees = draw(st.lists(TREES, min_size=1, max_size=3))
    scripts = draw(st.lists(st.lists(OPS, min_size=1, max_size=25), min_size=2, max_size=4))
    return caps, jobs, trees, scripts


class Clock:
    """Shared fake time. Workers read it at different moments, so their `now`s
    are not in commit order: the ledger must not care."""

    def __init__(self) -> None:
        self.t = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return at(self.t)

    def tick(self, dt: float) -> None:
        with self._lock:
            self.t += dt


class Run:
    """One example's world, clock, the jobs a client may cancel (single jobs and
    trees), every invariant broken so far (with the step that broke it), and what its
    steps got to do (for Hypothesis' statistics)."""

    def __init__(
        self, w: World, caps: dict[uuid.UUID, int], jobs: list[uuid.UUID], trees: list[uuid.UUID]
    ) -> None:
        self.w, self.caps, self.tops, self.trees = w, caps, jobs + trees, set(trees)
        self.clock = Clock()
        self.broken: list[str] = []
        self.notes: set[str] = set()

    def check(self, after: object) -> None:
        self.broken += [f"after {after}: {v}" for v in violations(self.w, self.caps)]


def step(run: Run, s: Session, held: dict[uuid.UUID, uuid.UUID], op: Any) -> None:  # noqa: C901
    w, now = run.w, run.clock.now()
    if op[0] == "tick":
        run.clock.tick(op[1])
    elif op[0] == "admit":
        res = ledger.try_admit(s, w.role, now, TTL)
        held.update({a.job_id: a.lease_id for a in res.admitted})
    elif op[0] == "renew":
        for job_id, lease_id in list(held.items()):
            if not ledger.renew(s, job_id, now, TTL, lease_id=lease_id):
                del held[job_id]  # expired, or cancelled: the worker stops
    elif op[0] in ("finish", "fail") and held:
        job_id = list(held)[op[-1] % len(held)]
        lease_id = held.pop(job_id)
        if op[0] == "fail":
            done = fail(s, job_id, lease_id, now)
        elif op[1] == JobStatus.succeeded:
            done = succeed(s, job_id, lease_id, now)
        else:
            done = ledger.release(s, job_id, now, op[1], lease_id=lease_id)
        what = "fail" if op[0] == "fail" else op[1].value
        run.notes.add(f"{what}: {'done' if done else 'the lease was gone'}")
    elif op[0] == "cancel":
        cancel(s, run.tops[op[1] % len(run.tops)])
    elif op[0] == "expire":
        ledger.expire(s, now)


def worker(run: Run, start: threading.Barrier, script: list[Any]) -> dict[uuid.UUID, uuid.UUID]:
    """Runs a script, checking the invariants after each step (with the other workers
    in the middle of theirs); returns the leases it still holds, none if it crashed."""
    held: dict[uuid.UUID, uuid.UUID] = {}
    with run.w.sessions() as s:
        s.connection()  # connect first, so that the workers really start together
        start.wait()
        for op in script:
            if op[0] == "crash":  # stops renewing; its leases must expire on their own
                return {}
            step(run, s, held, op)
            run.check(op)
    return held


def drain(run: Run, survivors: list[dict[uuid.UUID, uuid.UUID]]) -> None:
    """Survivors finish their jobs, the crashed workers' leases run out, and then one
    worker runs whatever is left to the end."""
    w, clock = run.w, run.clock
    with w.sessions() as s:
        for held in survivors:
            for job_id, lease_id in held.items():
                # False only if the lease ran out and was reaped behind the worker's back,
                # or the job was cancelled.
                if not succeed(s, job_id, lease_id, clock.now()):
                    assert s.get(KvLease, lease_id) is None
        clock.tick(TTL + 1)
        ledger.expire(s, clock.now())
        run.check("the survivors finished")
        assert all(
            c.free_bytes == c.total_bytes for c in ledger.capacity(s, clock.now(), role=w.role)
        )
        # Each round runs what fits; a reduce that fan-in creates waits for the next.
        for _ in range(200):
            admitted = ledger.try_admit(s, w.role, clock.now(), TTL).admitted
            if not admitted:
                break
            for a in admitted:
                assert succeed(s, a.job_id, a.lease_id, clock.now())
            run.check("a round of the drain")
        jobs = s.execute(
            select(Job.id, Job.parent_id, Job.status, Job.error_code).where(
                Job.tenant_id == w.tenant_id
            )
        ).all()
        assert s.scalar(select(func.count()).where(KvLease.backend_id.in_(run.caps))) == 0
    assert run.broken == [], run.broken[:10]
    final = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
    assert {j.status for j in jobs if j.id not in run.trees} <= final
    # A request the ledger failed (too large, expired too often) has no worker to take
    # its tree down: the sweeper does (`workers.sweeper`). Every other tree has ended.
    left_to_sweeper = {
        j.parent_id
        for j in jobs
        if j.parent_id and j.status == JobStatus.failed and j.error_code != WORKER_FAILED
    }
    for j in jobs:
        if j.id in run.trees and j.status not in final:
            assert j.status == JobStatus.running and j.id in left_to_sweeper, j


def run_workload(sessions: sessionmaker[Session], case: Any) -> None:
    caps_in, jobs, trees, scripts = case
    w = World(sessions)
    caps = {w.backend(c): c for c in caps_in}
    singles = [w.job(kv_bytes, est) for kv_bytes, est in jobs]
    tops = [start_tree(w, tree_plan(w.role, *t[:3]), at(0), t[3]) for t in trees]
    run = Run(w, caps, singles, tops)
    run.check("the start")
    with ThreadPoolExecutor(len(scripts)) as pool:
        start = threading.Barrier(len(scripts))
        survivors = list(pool.map(lambda sc: worker(run, start, sc), scripts))
    assert run.broken == [], run.broken[:10]
    drain(run, survivors)
    for outcome in outcomes(w) + sorted(run.notes):
        event(outcome)


HYPOTHESIS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}


@settings(max_examples=60, **HYPOTHESIS)  # type: ignore[arg-type]
@given(case=workloads())
def test_concurrent_workers_never_overbook_and_never_leak(
    pg_sessions: sessionmaker[Session], case: Any
) -> None:
    run_workload(pg_sessions, case)


@settings(max_examples=20, **HYPOTHESIS)  # type: ignore[arg-type]
@given(case=workloads())
def test_concurrent_workers_on_sqlite(sqlite_sessions: sessionmaker[Session], case: Any) -> None:
    run_workload(sqlite_sessions, case)
