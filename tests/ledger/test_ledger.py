"""The ledger on real databases, Postgres and SQLite: leases and job states move
together, expiry frees what a dead worker held, and fencing keeps a late worker
off its successor's lease."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ingestion.capacity.admission import Policy, Rule
from service import ledger
from service.models import Backend, Job, JobStatus, KvLease
from tests.ledger.conftest import World, at

TTL = 30.0


def status(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def lease_of(sessions: sessionmaker[Session], job_id: uuid.UUID) -> KvLease | None:
    with sessions() as s:
        return s.scalar(select(KvLease).where(KvLease.job_id == job_id))


def assert_consistent(w: World) -> None:
    """Every lease belongs to a running job, and every running job holds one."""
    with w.sessions() as s:
        rows = s.execute(
            select(Job.id, Job.status, KvLease.id)
            .outerjoin(KvLease, KvLease.job_id == Job.id)
            .where(Job.role == w.role)
        ).all()
    for job_id, state, lease_id in rows:
        assert (state == JobStatus.running) == (lease_id is not None), (job_id, state)


def free(w: World, now: float) -> list[int | None]:
    with w.sessions() as s:
        return [c.free_bytes for c in ledger.capacity(s, at(now), role=w.role)]


def test_acquire_renew_release(world: World) -> None:
    w, s = world, world.sessions
    b = w.backend(100)
    j1, j2 = w.job(60, 10), w.job(60, 10)
    with s() as sess:
        res = ledger.try_admit(sess, w.role, at(5), TTL)
    assert [(a.job_id, a.backend_id, a.rule) for a in res.admitted] == [(j1, b, Rule.in_order)]
    assert res.head == j2 and res.reservation_at == at(15)
    job = status(s, j1)
    assert (job.status, job.backend_id, job.admitted_at, job.kv_wait_s) == (
        JobStatus.running,
        b,
        at(5),
        5.0,
    )
    lease = lease_of(s, j1)
    assert lease is not None and lease.expires_at == at(35) and lease.expected_end_at == at(15)
    assert free(w, 6) == [40]
    assert_consistent(w)

    lease_id = res.admitted[0].lease_id
    with s() as sess:
        assert ledger.renew(sess, j1, at(20), TTL, lease_id=lease_id)
    lease = lease_of(s, j1)
    assert lease is not None and (lease.expires_at, lease.renewed_at) == (at(50), at(20))
    assert status(s, j1).heartbeat_at == at(20)

    with s() as sess:
        assert ledger.release(sess, j1, at(25), lease_id=lease_id)
        assert not ledger.release(sess, j1, at(25), lease_id=lease_id)
        assert not ledger.renew(sess, j1, at(26), TTL)
    job = status(s, j1)
    assert (job.status, job.finished_at, lease_of(s, j1)) == (JobStatus.succeeded, at(25), None)
    assert free(w, 26) == [100]
    with s() as sess:
        assert [a.job_id for a in ledger.try_admit(sess, w.role, at(26), TTL).admitted] == [j2]
    assert status(s, j2).kv_wait_s == 26.0
    assert_consistent(w)


def test_release_in_the_callers_transaction(world: World) -> None:
    w, s = world, world.sessions
    w.backend(100)
    j = w.job(10)
    with s() as sess:
        ledger.try_admit(sess, w.role, at(0), TTL)
    with s() as sess:
        assert ledger.release(sess, j, at(1), JobStatus.failed, error_reason="x", commit=False)
        sess.rollback()  # say the Result insert failed: the lease must survive
    assert lease_of(s, j) is not None and status(s, j).status == JobStatus.running
    with s() as sess:
        assert ledger.release(sess, j, at(2), JobStatus.failed, error_reason="x", commit=False)
        sess.commit()
    job = status(s, j)
    assert (job.status, job.error_reason, lease_of(s, j)) == (JobStatus.failed, "x", None)


def test_requeue_keeps_the_place_in_line(world: World) -> None:
    w, s = world, world.sessions
    w.backend(100)
    j1, j2 = w.job(80), w.job(80)
    with s() as sess:
        ledger.try_admit(sess, w.role, at(0), TTL)
        assert ledger.release(sess, j1, at(1), JobStatus.waiting_for_capacity)
        assert [a.job_id for a in ledger.try_admit(sess, w.role, at(2), TTL).admitted] == [j1]
    assert status(s, j2).status == JobStatus.waiting_for_capacity


def test_expired_lease_frees_capacity_before_and_after_expire(world: World) -> None:
    w, s = world, world.sessions
    w.backend(100)
    j = w.job(70)
    with s() as sess:
        lease_id = ledger.try_admit(sess, w.role, at(0), TTL).admitted[0].lease_id
    assert free(w, 29) == [30]
    assert free(w, 30) == [100]  # expired, not yet reaped: already free
    with s() as sess:
        assert not ledger.renew(sess, j, at(31), TTL, lease_id=lease_id)
        assert j in ledger.expire(sess, at(31))  # with leftovers of other tests
    job = status(s, j)
    assert (job.status, job.attempts, job.waiting_since) == (
        JobStatus.waiting_for_capacity,
        1,
        at(31),
    )
    assert lease_of(s, j) is None
    assert_consistent(w)


def test_repeated_expiry_fails_the_job(world: World) -> None:
    w, s = world, world.sessions
    w.backend(100)
    j = w.job(70)
    t = 0.0
    for attempt in range(3):
        with s() as sess:
            res = ledger.try_admit(sess, w.role, at(t), TTL, max_attempts=3)
        assert res.expired == ((j,) if attempt else ())
        assert [a.job_id for a in res.admitted] == [j]
        t += TTL
    with s() as sess:
        assert j in ledger.expire(sess, at(t), max_attempts=3)
    job = status(s, j)
    assert (job.status, job.attempts) == (JobStatus.failed, 3)
    assert job.error_reason is not None and "ran 3 times" in job.error_reason
    assert_consistent(w)


def test_a_late_worker_is_fenced_off_its_successors_lease(world: World) -> None:
    w, s = world, world.sessions
    w.backend(100)
    j = w.job(50)
    with s() as sess:
        old = ledger.try_admit(sess, w.role, at(0), TTL).admitted[0].lease_id
        # The worker went quiet; admission reaps its lease and admits the job again.
        new = ledger.try_admit(sess, w.role, at(31), TTL).admitted[0].lease_id
        assert new != old
        assert not ledger.renew(sess, j, at(32), TTL, lease_id=old)
        assert not ledger.release(sess, j, at(32), lease_id=old)
        assert ledger.renew(sess, j, at(32), TTL, lease_id=new)
    assert status(s, j).status == JobStatus.running


def test_oversize_fails_with_a_reason_and_blocks_nobody(world: World) -> None:
    w, s = world, world.sessions
    w.backend(100)
    unmeasured = w.backend(None)  # unknown capacity: never taken as infinite
    big, small = w.job(101), w.job(10)
    with s() as sess:
        res = ledger.try_admit(sess, w.role, at(0), TTL)
    # The unmeasured replica might be big enough: the big job waits rather than fails.
    assert ([a.job_id for a in res.admitted], res.failed) == ([small], ())
    assert status(s, big).status == JobStatus.waiting_for_capacity
    with s() as sess:
        sess.execute(update(Backend).where(Backend.id == unmeasured).values(kv_capacity_bytes=50))
        sess.commit()
        res = ledger.try_admit(sess, w.role, at(1), TTL)
    assert [f[0] for f in res.failed] == [big]
    job = status(s, big)
    assert job.status == JobStatus.failed and "largest" in (job.error_reason or "")


def test_down_or_unmeasured_replicas_get_nothing(world: World) -> None:
    w, s = world, world.sessions
    w.backend(1000, healthy=False)
    w.backend(None)
    j = w.job(10)
    with s() as sess:
        res = ledger.try_admit(sess, w.role, at(0), TTL)
    assert (res.admitted, res.failed) == ((), ())
    assert status(s, j).status == JobStatus.waiting_for_capacity


def test_prefix_cache_then_most_free(world: World) -> None:
    w, s = world, world.sessions
    small, large = w.backend(100), w.backend(200)
    doc = w.document()
    first = w.job(10, doc=doc)
    with s() as sess:
        sess.execute(update(Job).where(Job.id == first).values(preferred_backend_id=small))
        sess.commit()
        assert ledger.try_admit(sess, w.role, at(0), TTL).admitted[0].backend_id == small
        ledger.release(sess, first, at(1))
    again, other = w.job(10, doc=doc), w.job(10)
    with s() as sess:
        got = {a.job_id: a.backend_id for a in ledger.try_admit(sess, w.role, at(2), TTL).admitted}
    assert got == {again: small, other: large}


def test_backfill_and_aging_in_the_database(world: World) -> None:
    w, s = world, world.sessions
    w.backend(100)
    w.job(60, 100)
    with s() as sess:
        ledger.try_admit(sess, w.role, at(0), 1000)
    head, quick, slow = w.job(70, 10), w.job(30, 50), w.job(30, 500)
    with s() as sess:
        res = ledger.try_admit(sess, w.role, at(1), 1000, policy=Policy(max_head_wait_s=60))
    assert [(a.job_id, a.rule) for a in res.admitted] == [(quick, Rule.ends_before_reservation)]
    assert res.head == head and res.reservation_at == at(100)
    with s() as sess:
        ledger.release(sess, quick, at(2))
        res = ledger.try_admit(sess, w.role, at(70), 1000, policy=Policy(max_head_wait_s=60))
    assert res.admitted == () and status(s, slow).status == JobStatus.waiting_for_capacity
    assert_consistent(w)
