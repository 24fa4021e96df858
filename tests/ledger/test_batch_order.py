"""Interactive work before batch work, batches by expiry and fair between tenants, the
batch aging bound, and same-document jobs kept on one replica: the pure policy."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.capacity.admission import Lease, Policy, Replica, Rule, WaitingJob, decide
from ingestion.capacity.admission.order import aged, queue_key
from tests.examples import examples

NOW = 10_000.0


def job(
    name: str,
    seq: int,
    tenant: str,
    *,
    kv: int = 10,
    batch: bool = False,
    expires: float = math.inf,
    waited: float = 0.0,
    est: float = math.inf,
    doc: str | None = None,
) -> WaitingJob:
    return WaitingJob(
        name, seq, kv, NOW - waited, est, tenant=tenant, batch=batch, expires_at=expires,
        affinity=doc,
    )  # fmt: skip


def order(*replicas: Replica, jobs: list[WaitingJob], policy: Policy | None = None) -> list[str]:
    return [p.job_id for p in decide(list(replicas), jobs, NOW, policy).placements]


def test_an_interactive_job_goes_before_an_earlier_batch_backlog() -> None:
    # A's batch arrived first and A holds nothing; B's interactive job still goes first.
    backlog = [job(f"a{i}", i, "A", batch=True) for i in range(50)]
    b = job("b", 100, "B")
    got = order(Replica("r", 30), jobs=[*backlog, b])
    assert got == ["b", "a0", "a1"]


def test_a_tenants_own_interactive_job_passes_its_batch() -> None:
    backlog = [job(f"a{i}", i, "A", batch=True) for i in range(5)]
    mine = job("mine", 100, "A")
    assert order(Replica("r", 10), jobs=[*backlog, mine]) == ["mine"]


def test_an_interactive_head_holds_its_reservation_against_batch_jobs() -> None:
    # The interactive job needs 60 B; 50 are leased until NOW + 100. A batch job of
    # 50 B that would run past that would delay it: it waits; one that ends first goes.
    r = Replica("r", 100, (Lease(50, NOW + 100, "X"),))
    head = job("head", 10, "B", kv=60)
    long_batch = job("long", 1, "A", kv=50, batch=True, est=500)
    short_batch = job("short", 2, "A", kv=50, batch=True, est=50)
    d = decide([r], [long_batch, short_batch, head], NOW)
    assert d.head == "head"
    assert [(p.job_id, p.rule) for p in d.placements] == [("short", Rule.ends_before_reservation)]


def test_two_tenants_batches_alternate() -> None:
    a = [job(f"a{i}", i, "A", batch=True) for i in range(10)]
    b = [job(f"b{i}", 100 + i, "B", batch=True) for i in range(10)]
    assert order(Replica("r", 60), jobs=[*a, *b]) == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_the_batch_that_expires_first_goes_first_within_a_tenant() -> None:
    late = [job(f"late{i}", i, "A", batch=True, expires=NOW + 7200) for i in range(5)]
    soon = [job(f"soon{i}", 100 + i, "A", batch=True, expires=NOW + 600) for i in range(5)]
    assert order(Replica("r", 30), jobs=[*late, *soon]) == ["soon0", "soon1", "soon2"]


def test_between_equally_served_tenants_the_earlier_expiry_goes_first() -> None:
    a = job("a", 1, "A", batch=True, expires=NOW + 7200)
    b = job("b", 2, "B", batch=True, expires=NOW + 600)
    assert order(Replica("r", 10), jobs=[a, b]) == ["b"]
    # Fairness comes first: a tenant already served waits however soon it expires.
    held = Replica("r", 20, (Lease(10, math.inf, "B"),))
    assert order(held, jobs=[a, b]) == ["a"]


def test_an_aged_batch_job_goes_before_interactive_work() -> None:
    policy = Policy(batch_max_wait_s=600)
    old = job("old", 1, "A", batch=True, waited=601)
    young = job("young", 2, "A", batch=True, waited=599)
    fresh = job("fresh", 3, "B")
    assert order(Replica("r", 10), jobs=[young, fresh, old], policy=policy) == ["old"]
    assert order(Replica("r", 10), jobs=[young, fresh], policy=policy) == ["fresh"]
    # The interactive bound (900 s) does not age a batch job, only its own does.
    assert not aged(young, NOW, Policy(max_head_wait_s=1, batch_max_wait_s=600))


def test_nothing_passes_an_aged_batch_head() -> None:
    policy = Policy(batch_max_wait_s=600)
    r = Replica("r", 100, (Lease(50, NOW + 100, "X"),))
    old = job("old", 1, "A", kv=60, batch=True, waited=700)
    small = job("small", 2, "B", kv=10, est=1)
    d = decide([r], [old, small], NOW, policy)
    assert d.head == "old" and d.aged and d.placements == ()


def test_jobs_of_one_document_follow_each_other_onto_one_replica() -> None:
    # Nothing served the document yet: the first goes to the most free replica, and
    # the next ones follow it there while they fit, though the other has more room.
    jobs = [job(f"d{i}", i, "A", kv=30, doc="doc") for i in range(3)]
    other = job("o", 10, "A", kv=30, doc="other")
    d = decide([Replica("r1", 100), Replica("r2", 90)], [*jobs, other], NOW)
    assert {p.job_id: p.replica_id for p in d.placements} == {
        "d0": "r1",
        "d1": "r1",
        "d2": "r1",
        "o": "r2",
    }


def test_a_named_replica_beats_the_documents_last_placement() -> None:
    first = job("first", 1, "A", kv=10, doc="doc")
    named = WaitingJob("named", 2, 10, NOW, preferred_replica="r2", tenant="A", affinity="doc")
    d = decide([Replica("r1", 100), Replica("r2", 50)], [first, named], NOW)
    assert {p.job_id: p.replica_id for p in d.placements} == {"first": "r1", "named": "r2"}


jobs_st = st.lists(
    st.tuples(
        st.sampled_from("ABC"),
        st.booleans(),
        st.sampled_from([600.0, 3600.0, math.inf]),
        st.floats(0, 2000),
        st.integers(1, 40),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=examples(200, 500), deadline=None)
@given(jobs_st, st.integers(10, 200))
def test_no_unaged_batch_job_starts_in_order_while_an_interactive_one_waits(
    drawn: list[tuple[str, bool, float, float, int]], capacity: int
) -> None:
    """Placed in order (before any head), every interactive or aged job comes before
    every unaged batch job: a batch job starts ahead only by backfilling."""
    policy = Policy(batch_max_wait_s=1000)
    waiting = [
        job(f"j{i}", i, t, kv=kv, batch=b, expires=NOW + e, waited=w)
        for i, (t, b, e, w, kv) in enumerate(drawn)
    ]
    by_id = {j.id: j for j in waiting}
    d = decide([Replica("r", capacity)], waiting, NOW, policy)
    in_order = [by_id[p.job_id] for p in d.placements if p.rule is Rule.in_order]
    classes = [queue_key(j, NOW, policy)[0] for j in in_order]
    assert classes == sorted(classes)
    # With no tenant limits, a batch job starts in order only once every interactive
    # (or aged) job has started: none is left waiting behind it.
    if 1 in classes:
        placed = {p.job_id for p in d.placements}
        left = [j for j in waiting if j.id not in placed and j.id not in d.oversize]
        assert all(queue_key(j, NOW, policy)[0] == 1 for j in left)
