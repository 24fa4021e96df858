"""Batch work through `ledger.try_admit` and the task priorities, on Postgres and SQLite:
interactive jobs first, batches fair between tenants and by expiry, the batch aging
bound, same-document jobs on one replica; and on Postgres an interactive job that
arrives while an admission holds the role's lock, forced with a gate."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ingestion.capacity.admission import Policy
from ingestion.capacity.priority import BATCH_STEPS, INTERACTIVE_STEPS, PRIORITY_STEPS
from service import ledger
from service.jobs import dispatch
from service.models import Batch, Job, JobStatus, Tenant, utcnow
from tests.api.test_fair_dispatch import make_jobs
from tests.ledger.conftest import T0, World, at, many
from tests.ledger.gates import Gate, Monitor, Runner, backend_pid

TTL = 1000.0


def batch(w: World, tenant: uuid.UUID, expires_in_h: float) -> uuid.UUID:
    with w.sessions() as s:
        b = Batch(tenant_id=tenant, expires_at=T0 + timedelta(hours=expires_in_h))
        s.add(b)
        s.commit()
        return b.id


def admit(w: World, t: float, policy: Policy | None = None) -> list[uuid.UUID]:
    with w.sessions() as s:
        return [a.job_id for a in ledger.try_admit(s, w.role, at(t), TTL, policy=policy).admitted]


def release(w: World, job_id: uuid.UUID, t: float) -> None:
    with w.sessions() as s:
        assert ledger.release(s, job_id, at(t))


def test_an_interactive_job_behind_a_big_batch_backlog_goes_first(world: World) -> None:
    w = world
    w.backend(100)
    a = w.tenant_id
    backlog = many(w, 150, a, w.doc, batch_id=batch(w, a, 24))
    assert admit(w, 0) == backlog[:10]  # alone, the batch fills the pool
    b, b_doc = w.tenant("b")
    (theirs,) = many(w, 1, b, b_doc, waiting_since=at(1))
    # A's own interactive job, behind its 150 batch jobs: past the 100 of A that the
    # scan reads in arrival order, so it is seen only because the scan ranks it first.
    (mine,) = many(w, 1, a, w.doc, waiting_since=at(1))
    assert admit(w, 1) == []
    release(w, backlog[0], 2)
    assert admit(w, 2) == [theirs]  # B holds nothing: its job first
    release(w, backlog[1], 3)
    assert admit(w, 3) == [mine]  # then A's interactive job, before its own batch
    release(w, backlog[2], 4)
    assert admit(w, 4) == [backlog[10]]


def test_two_tenants_batches_alternate(world: World) -> None:
    w = world
    w.backend(40)
    a = w.tenant_id
    b, b_doc = w.tenant("b")
    a_jobs = many(w, 10, a, w.doc, batch_id=batch(w, a, 24))
    b_jobs = many(w, 10, b, b_doc, batch_id=batch(w, b, 24))
    assert admit(w, 0) == [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1]]
    # Each release goes to the tenant holding less, whichever gave it back.
    release(w, a_jobs[0], 1)
    release(w, a_jobs[1], 1)
    assert admit(w, 1) == [a_jobs[2], a_jobs[3]]
    release(w, b_jobs[0], 2)
    assert admit(w, 2) == [b_jobs[2]]


def test_the_batch_that_expires_first_goes_first(world: World) -> None:
    w = world
    w.backend(30)
    a = w.tenant_id
    # The late batch came first, with more jobs than the scan reads of one tenant.
    late = many(w, 120, a, w.doc, batch_id=batch(w, a, 48))
    soon = many(w, 3, a, w.doc, batch_id=batch(w, a, 1))
    assert admit(w, 0) == soon
    for job_id in soon:
        release(w, job_id, 1)
    assert admit(w, 1) == late[:3]


def test_between_tenants_holding_the_same_the_earlier_expiry_goes_first(world: World) -> None:
    w = world
    w.backend(10)
    a = w.tenant_id
    b, b_doc = w.tenant("b")
    (a_late,) = many(w, 1, a, w.doc, batch_id=batch(w, a, 48))
    (b_soon,) = many(w, 1, b, b_doc, batch_id=batch(w, b, 2))
    assert admit(w, 0) == [b_soon]
    release(w, b_soon, 1)
    assert admit(w, 1) == [a_late]


def test_an_aged_batch_job_is_still_admitted(world: World) -> None:
    w = world
    w.backend(10)
    policy = Policy(batch_max_wait_s=600)
    a = w.tenant_id
    (old,) = many(w, 1, a, w.doc, batch_id=batch(w, a, 24))  # waiting since T0
    (first,) = many(w, 1, a, w.doc, waiting_since=at(100))
    assert admit(w, 300, policy) == [first]  # 300 s: the batch job yields
    release(w, first, 400)
    b, b_doc = w.tenant("b")
    (fresh,) = many(w, 1, b, b_doc, waiting_since=at(650))
    # 700 s: past its bound, the batch job goes before the fresh interactive job,
    # though that one's tenant holds nothing.
    assert admit(w, 700, policy) == [old]
    release(w, old, 710)
    assert admit(w, 710, policy) == [fresh]


def test_jobs_of_one_new_document_go_to_one_replica(world: World) -> None:
    w = world
    big, other = w.backend(100), w.backend(90)
    doc = w.document()
    same = many(w, 3, w.tenant_id, doc, kv=30)
    (elsewhere,) = many(w, 1, w.tenant_id, w.doc, kv=30)
    with w.sessions() as s:
        got = {a.job_id: a.backend_id for a in ledger.try_admit(s, w.role, at(0), TTL).admitted}
    assert got == {**dict.fromkeys(same, big), elsewhere: other}


def test_batch_tasks_get_a_worse_priority_than_interactive_ones(
    sessions: sessionmaker[Session],
) -> None:
    role = f"r{uuid.uuid4().hex[:12]}"
    with sessions() as session:
        mine, other = Tenant(name=f"mine-{role}"), Tenant(name=f"other-{role}")
        session.add_all([mine, other])
        session.commit()
        now = utcnow()
        mine_batch = Batch(tenant_id=mine.id, expires_at=now + timedelta(hours=24))
        other_batch = Batch(tenant_id=other.id, expires_at=now + timedelta(hours=24))
        session.add_all([mine_batch, other_batch])
        session.commit()
        # Mine: 40 interactive jobs waiting and 2 batch jobs; other: 300 batch jobs.
        interactive = make_jobs(session, mine.id, role, 40)
        mine_b = make_jobs(session, mine.id, role, 2, batch_id=mine_batch.id)
        other_b = make_jobs(session, other.id, role, 300, batch_id=other_batch.id)
        old = now - timedelta(hours=2)
        [aged] = make_jobs(session, other.id, role, 1, batch_id=other_batch.id, waiting_since=old)
        got = dispatch.priorities(
            session, [interactive[0], mine_b[0], other_b[0], aged], Policy(batch_max_wait_s=3600)
        )
    # Each class counts its own backlog: 40 interactive (the third interactive step);
    # 2 batch (the first batch step), 301 batch (the last); the aged one on top.
    assert got == {
        interactive[0]: INTERACTIVE_STEPS[2],
        mine_b[0]: BATCH_STEPS[0],
        other_b[0]: BATCH_STEPS[-1],
        aged: PRIORITY_STEPS[0],
    }


@pytest.fixture
def monitor(pg_url: str) -> Iterator[Monitor]:
    m = Monitor(pg_url)
    yield m
    m.close()


def test_an_interactive_job_arriving_during_an_admission_is_placed_by_it(
    pg_sessions: sessionmaker[Session], monitor: Monitor
) -> None:
    """First admission: locks the role's backends and is held there. Meanwhile an
    interactive job commits, and a second admission queues on the lock. The first
    then reads the waiting jobs (after the lock: it sees the new job) and places it
    ahead of the batch backlog; the second finds the pool full and places nothing."""
    w = World(pg_sessions)
    w.backend(20)
    a = w.tenant_id
    backlog = many(w, 50, a, w.doc, batch_id=batch(w, a, 24))
    with w.sessions() as s1, w.sessions() as s2:
        gate = Gate(s1, tables=("backends",))
        pid2 = backend_pid(s2)
        first = Runner(lambda: ledger.try_admit(s1, w.role, at(10), TTL))
        first.start()
        monitor.until(lambda: gate.paused.is_set() or not first.is_alive(), "first to lock")
        assert gate.paused.is_set(), f"the admission took no lock: {first.error!r}"
        b, b_doc = w.tenant("b")
        (theirs,) = many(w, 1, b, b_doc, waiting_since=at(9))
        second = Runner(lambda: ledger.try_admit(s2, w.role, at(10), TTL))
        second.start()
        monitor.until(lambda: monitor.waits_on_lock(pid2) or not second.is_alive(), "to wait")
        gate.open()
        one, two = first.outcome(), second.outcome()
    assert [x.job_id for x in one.admitted] == [theirs, backlog[0]]
    assert two.admitted == ()
    with w.sessions() as s:
        running = s.scalars(
            select(Job.id).where(Job.role == w.role, Job.status == JobStatus.running)
        ).all()
    assert set(running) == {theirs, backlog[0]}
