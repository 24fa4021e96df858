"""Fairness between tenants through `ledger.try_admit`, on Postgres and SQLite: the
tenants of leases and waiting jobs reach the policy in the admission transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from ingestion.capacity.admission import Policy
from service import ledger
from service.models import Job, KvLease
from tests.ledger.conftest import World, at
from tests.ledger.conftest import many as waiting

TTL = 30.0


def many(
    w: World, n: int, kv: int, est: float, tenant: uuid.UUID, doc: uuid.UUID
) -> list[uuid.UUID]:
    return waiting(w, n, tenant, doc, kv=kv, est_duration_s=est)


def running_of(w: World, tenant: uuid.UUID) -> int:
    with w.sessions() as s:
        stmt = select(func.count()).select_from(KvLease).join(Job, Job.id == KvLease.job_id)
        return s.scalar(stmt.where(Job.tenant_id == tenant, Job.role == w.role)) or 0


def test_one_job_of_b_is_admitted_before_as_500(world: World) -> None:
    w = world
    w.backend(100)
    a = w.tenant_id
    a_jobs = many(w, 500, 10, 5.0, a, w.doc)
    with w.sessions() as s:
        first = ledger.try_admit(s, w.role, at(0), TTL)
    assert [x.job_id for x in first.admitted] == a_jobs[:10]  # A alone fills the pool
    b, b_doc = w.tenant("b")
    (b_job,) = many(w, 1, 10, 5.0, b, b_doc)
    with w.sessions() as s:
        nothing = ledger.try_admit(s, w.role, at(1), TTL)
        assert nothing.admitted == () and nothing.head == b_job
        assert ledger.release(s, a_jobs[0], at(2), lease_id=first.admitted[0].lease_id)
        nxt = ledger.try_admit(s, w.role, at(2), TTL)
    # The bytes A gave back go to B, not to A's eleventh job.
    assert [x.job_id for x in nxt.admitted] == [b_job]


def test_a_tenant_with_thousands_waiting_cannot_push_another_out_of_the_scan(
    world: World,
) -> None:
    w = world
    w.backend(100)
    many(w, 300, 10, 5.0, w.tenant_id, w.doc)
    b, b_doc = w.tenant("b")
    (b_job,) = many(w, 1, 10, 5.0, b, b_doc)
    with w.sessions() as s:
        res = ledger.try_admit(s, w.role, at(0), TTL, max_scan=50, max_scan_per_tenant=20)
    assert b_job in {x.job_id for x in res.admitted}
    assert len(res.admitted) == 10


def test_kv_share_and_running_limit_while_another_tenant_waits(world: World) -> None:
    w = world
    w.backend(100)
    a = w.tenant_id
    many(w, 8, 10, 5.0, a, w.doc)
    b, b_doc = w.tenant("b")
    (big,) = many(w, 1, 95, 5.0, b, b_doc)
    with w.sessions() as s:
        res = ledger.try_admit(s, w.role, at(0), TTL, policy=Policy(tenant_max_kv_share=0.5))
    # A keeps 50% while B's job waits for the replica (its reservation is at 5 s).
    assert running_of(w, a) == 5 and res.head == big
    with w.sessions() as s:
        more = ledger.try_admit(s, w.role, at(1), TTL, policy=Policy(tenant_max_kv_share=0.5))
    assert more.admitted == () and running_of(w, a) == 5

    c, c_doc = w.tenant("c")
    many(w, 3, 1, 1.0, c, c_doc)
    with w.sessions() as s:
        limited = ledger.try_admit(s, w.role, at(1), TTL, policy=Policy(tenant_max_running=2))
    # C starts two of its three (its limit); A, at five already, starts none.
    assert len(limited.admitted) == 2
    assert running_of(w, c) == 2 and running_of(w, a) == 5


def test_alone_a_tenant_may_fill_the_pool(world: World) -> None:
    w = world
    w.backend(100)
    many(w, 12, 10, 5.0, w.tenant_id, w.doc)
    with w.sessions() as s:
        res = ledger.try_admit(s, w.role, at(0), TTL, policy=Policy(tenant_max_kv_share=0.3))
    assert len(res.admitted) == 10 and running_of(w, w.tenant_id) == 10
