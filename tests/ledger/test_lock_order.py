"""One lock order for every transaction on jobs and leases (`workers/ledger.py`), shown
on Postgres by forced interleavings: one session runs up to its first row lock and
holds it, the other runs into it, then the first goes on. With retries switched off,
a deadlock would surface as an error; each pair must instead end with both done and
the job's status and lease in agreement."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stamina
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.jobs import lifecycle
from service.models import Job, JobStatus, KvLease
from tests.ledger.conftest import World, at
from tests.ledger.gates import Gate, Monitor, Runner, backend_pid
from workers import ledger

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
    second: Callable[[Session], Any],
) -> tuple[Any, Any]:  # fmt: skip
    """`first` takes its first row lock and holds it while `second` runs into it."""
    with sessions() as s1, sessions() as s2:
        gate = Gate(s1)
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
