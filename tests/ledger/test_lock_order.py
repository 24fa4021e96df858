"""One lock order for every transaction on backends, jobs and leases
(`service/ledger/`), shown on Postgres by forced interleavings: one session runs up
to its first row lock and holds it, the other runs into it, then the first goes on.
Pairs: cancel against renew, release and reaping of a running job; a request's
success (release, result, fan-in) against a cancel of its map-reduce job; the backend
refresher against an admission. With retries switched off, a deadlock would surface
as an error; each pair must instead end with both done and the rows in agreement."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stamina
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingestion.tasks.output import TaskOutput
from service import ledger
from service.backends.completion import Completion
from service.backends.discovery import refresh
from service.config import get_settings
from service.deployment import BackendConfig
from service.jobs import lifecycle, tree
from service.models import Backend, Job, JobStatus, KvLease, Result
from tests.ledger.conftest import World, at
from tests.ledger.gates import Gate, Monitor, Runner, backend_pid
from tests.ledger.test_tree import _plan
from workers.jobs import run as job_run
from workers.jobs.admitted import Admitted
from workers.jobs.text import RequestText

TTL = 30.0
Op = Callable[[Session, uuid.UUID, uuid.UUID], Any]


def _cancel(s: Session, job_id: uuid.UUID, lease_id: uuid.UUID) -> Any:
    job = s.get(Job, job_id)
    assert job is not None
    return lifecycle.cancel(s, job)


OPS: dict[str, Op] = {
    "cancel": _cancel,
    "renew": lambda s, j, lease: ledger.renew(s, j, at(1), TTL, lease_id=lease),
    "release": lambda s, j, lease: ledger.release(s, j, at(1), lease_id=lease),
    # The lease ran out at 30: the reaper deletes it and puts the job back in line.
    "reap": lambda s, j, lease: j in ledger.expire(s, at(31)),
}

# (first, second) -> (the job's final status, what the other op returned); cancel
# returns the jobs it moved: the job, unless it had already succeeded.
CASES = {
    ("cancel", "renew"): (JobStatus.cancelled, False),
    ("renew", "cancel"): (JobStatus.cancelled, True),
    ("cancel", "release"): (JobStatus.cancelled, False),
    ("release", "cancel"): (JobStatus.succeeded, True),
    ("cancel", "reap"): (JobStatus.cancelled, False),
    ("reap", "cancel"): (JobStatus.cancelled, True),
}


@pytest.fixture
def monitor(pg_url: str) -> Iterator[Monitor]:
    m = Monitor(pg_url)
    yield m
    m.close()


@pytest.fixture
def no_retries() -> Iterator[None]:
    # A deadlock that a retry would hide must show here.
    with stamina.set_testing(True, attempts=1):
        yield


def interleave(
    sessions: sessionmaker[Session], monitor: Monitor, first: Callable[[Session], Any],
    second: Callable[[Session], Any], tables: tuple[str, ...] = ("jobs", "kv_leases"),
) -> tuple[Any, Any]:  # fmt: skip
    """`first` takes its first row lock and holds it while `second` runs into it."""
    with sessions() as s1, sessions() as s2:
        gate = Gate(s1, tables=tables)
        pid2 = backend_pid(s2)
        t1 = Runner(lambda: first(s1))
        t1.start()
        monitor.until(lambda: gate.paused.is_set() or not t1.is_alive(), "first to lock")
        assert gate.paused.is_set(), f"the first took no lock: {t1.error!r}"
        t2 = Runner(lambda: second(s2))
        t2.start()
        monitor.until(lambda: monitor.waits_on_lock(pid2) or not t2.is_alive(), "second to wait")
        gate.open()
        return t1.outcome(), t2.outcome()


def _state(w: World, job_id: uuid.UUID) -> tuple[JobStatus, bool]:
    with w.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        lease = s.scalar(select(KvLease.id).where(KvLease.job_id == job_id))
        return job.status, lease is not None


@pytest.mark.usefixtures("no_retries")
@pytest.mark.parametrize(("first", "second"), list(CASES), ids=[f"{a}-{b}" for a, b in CASES])
def test_two_sessions_on_one_running_job_never_deadlock(
    pg_sessions: sessionmaker[Session], monitor: Monitor, first: str, second: str
) -> None:
    w = World(pg_sessions)
    w.backend(100)
    j = w.job(10)
    with w.sessions() as s:
        (admitted,) = ledger.try_admit(s, w.role, at(0), TTL).admitted
    lease = admitted.lease_id
    got = interleave(
        w.sessions,
        monitor,
        lambda s: OPS[first](s, j, lease),
        lambda s: OPS[second](s, j, lease),
    )
    final, other_did = CASES[(first, second)]
    assert _state(w, j) == (final, False)
    cancelled = [j] if final == JobStatus.cancelled else []
    assert list(got) == [cancelled if op == "cancel" else other_did for op in (first, second)]


# -- a request's success (release + fan-in) against a cancel of its map-reduce job ---


def _map_reduce(w: World) -> tuple[uuid.UUID, list[uuid.UUID], Any]:
    """A running map-reduce job whose map requests are all admitted."""
    w.backend(10**6)
    with w.sessions() as s:
        parent = Job(tenant_id=w.tenant_id, document_id=w.doc, task="summarize",
                     max_output_tokens=16, idempotency_key=uuid.uuid4().hex)  # fmt: skip
        s.add(parent)
        s.flush()
        plan = _plan(w.role)
        kids = tree.start(s, parent, plan, at(0), {i: 1.0 for i in range(len(plan.map))})
        s.commit()
        parent_id = parent.id
    with w.sessions() as s:
        admitted = ledger.try_admit(s, w.role, at(0), TTL).admitted
    assert {a.job_id for a in admitted} == set(kids)
    first = next(a for a in admitted if a.job_id == kids[0])
    request = RequestText("map", [], (1, 2), 130, 16)
    run = Admitted(
        first.job_id, first.lease_id, 1, "http://b", "m", "summarize", {}, request, "gemma"
    )
    return parent_id, kids, run


def _succeed(s: Session, run: Any) -> None:
    done = Completion("answer", "stop", 130, 2, "req-1", "m", 1, 0.1, 0.05)
    job_run._succeed(lambda: s, get_settings(), run, done, TaskOutput("answer", None), list)


@pytest.mark.usefixtures("no_retries")
@pytest.mark.parametrize("succeed_first", [True, False], ids=["succeed-cancel", "cancel-succeed"])
def test_a_request_succeeding_while_its_job_is_cancelled(
    pg_sessions: sessionmaker[Session], monitor: Monitor, succeed_first: bool
) -> None:
    w = World(pg_sessions)
    parent, kids, run = _map_reduce(w)

    def cancel(s: Session) -> Any:
        job = s.get(Job, parent)
        assert job is not None
        return lifecycle.cancel(s, job)

    ops = [lambda s: _succeed(s, run), cancel]
    first, second = ops if succeed_first else ops[::-1]
    interleave(w.sessions, monitor, first, second)
    with w.sessions() as s:
        states = {j.id: j.status for j in s.scalars(select(Job).where(Job.id.in_([parent, *kids])))}
        results = s.scalars(select(Result.job_id).where(Result.job_id.in_(kids))).all()
        leases = s.scalars(select(KvLease.id).where(KvLease.job_id.in_(kids))).all()
    # The success landed whole (result and status) or not at all; everything else is
    # cancelled and holds no lease.
    won = JobStatus.succeeded if succeed_first else JobStatus.cancelled
    assert states == {parent: JobStatus.cancelled, kids[0]: won,
                      **{k: JobStatus.cancelled for k in kids[1:]}}  # fmt: skip
    assert (list(results), list(leases)) == ([kids[0]] if succeed_first else [], [])


# -- the backend refresher against an admission on the same replicas ----------------


@pytest.mark.usefixtures("no_retries")
def test_a_refresh_and_an_admission_never_deadlock(
    pg_sessions: sessionmaker[Session], monitor: Monitor
) -> None:
    w = World(pg_sessions)
    # Two replicas whose URLs sort the other way round from their ids; nothing listens.
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    urls = {low: f"http://127.0.0.1:9/{w.role}/b", high: f"http://127.0.0.1:9/{w.role}/a"}
    with w.sessions() as s:
        for backend_id, url in urls.items():
            s.add(Backend(id=backend_id, role=w.role, url=url, kv_capacity_bytes=100,
                          healthy=True))  # fmt: skip
        s.commit()
    j = w.job(10)
    configs = [BackendConfig(role=w.role, url=url) for url in urls.values()]  # type: ignore[arg-type]
    settings = get_settings().model_copy(update={"backends": configs})
    interleave(
        w.sessions,
        monitor,
        lambda s: refresh(s, settings, at(0), timeout=2.0),
        lambda s: ledger.try_admit(s, w.role, at(1), TTL).admitted,
        tables=("backends",),
    )
    with w.sessions() as s:
        healthy = s.scalars(select(Backend.healthy).where(Backend.id.in_(urls))).all()
        job = s.get(Job, j)
    # The refresh found both down before admission read them: nothing was placed.
    assert healthy == [False, False]
    assert job is not None and job.status == JobStatus.waiting_for_capacity
