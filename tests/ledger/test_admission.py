"""The admission policy on its own: worked cases for each rule, then properties."""

from __future__ import annotations

import heapq
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.capacity.admission import (
    Decision,
    Lease,
    Policy,
    Replica,
    Rule,
    WaitingJob,
    apply,
    decide,
    reserve,
)
from tests.examples import examples

NOW = 1000.0


def job(
    i: int, kv: int, est: float = math.inf, waited: float = 0.0, pref: str | None = None
) -> WaitingJob:
    return WaitingJob(f"j{i}", i, kv, NOW - waited, est, pref)


def placed(d: Decision) -> dict[str, tuple[str, Rule]]:
    return {p.job_id: (p.replica_id, p.rule) for p in d.placements}


# -- worked cases ---------------------------------------------------------------


def test_in_order_until_one_does_not_fit() -> None:
    a = Replica("a", 100)
    d = decide([a], [job(1, 60), job(2, 60), job(3, 50)], NOW)
    # j3 would fit beside nothing: j2 is the head, T = never (j1 never ends).
    assert placed(d) == {"j1": ("a", Rule.in_order)}
    assert d.head == "j2" and d.reservation is None


def test_backfill_only_when_it_cannot_delay_the_head() -> None:
    a = Replica("a", 100, (Lease(40, NOW + 10),))
    waiting = [job(1, 70), job(2, 20, est=50), job(3, 30, est=50), job(4, 30, est=5)]
    d = decide([a], waiting, NOW)
    assert d.reservation is not None
    assert (d.reservation.at, d.reservation.spare_bytes) == (NOW + 10, 30)
    # j2 fits in what stays free beside the head at T; after it, j3 no longer
    # does; j4 is back before T.
    assert placed(d) == {
        "j2": ("a", Rule.fits_beside_head),
        "j4": ("a", Rule.ends_before_reservation),
    }


def test_a_later_job_may_use_another_replica() -> None:
    a = Replica("a", 100, (Lease(60, NOW + 10),))
    b = Replica("b", 50, (Lease(10, NOW + 99),))
    d = decide([a, b], [job(1, 70), job(2, 40, est=500)], NOW)
    assert d.reservation is not None and d.reservation.replica_id == "a"
    assert placed(d) == {"j2": ("b", Rule.other_replica)}


def test_aging_stops_all_passing() -> None:
    a = Replica("a", 100, (Lease(60, NOW + 10),))
    waiting = [job(1, 70, waited=901), job(2, 1, est=1)]
    assert decide([a], waiting, NOW, Policy(max_head_wait_s=900)).placements == ()
    assert decide([a], waiting, NOW, Policy(max_head_wait_s=900)).aged
    assert placed(decide([a], waiting, NOW, Policy(max_head_wait_s=902))) == {
        "j2": ("a", Rule.ends_before_reservation)
    }


def test_prefix_cache_then_most_free() -> None:
    a, b = Replica("a", 100), Replica("b", 100, (Lease(50, NOW + 1),))
    assert placed(decide([a, b], [job(1, 40, pref="b")], NOW)) == {"j1": ("b", Rule.in_order)}
    assert placed(decide([a, b], [job(1, 60, pref="b")], NOW)) == {"j1": ("a", Rule.in_order)}
    assert placed(decide([a, b], [job(1, 10)], NOW)) == {"j1": ("a", Rule.in_order)}


def test_oversize_is_reported_never_placed_and_blocks_nobody() -> None:
    big = Replica("big", 500, (Lease(500, NOW + 5),), accepting=False)
    d = decide([Replica("a", 100), big], [job(1, 501), job(2, 300), job(3, 50)], NOW)
    assert d.oversize == ("j1",)
    # j2 fits only the replica that is down: no reservation to protect, j3 runs.
    assert d.head == "j2" and d.reservation is None
    assert placed(d) == {"j3": ("a", Rule.no_reservation)}


def test_overrunning_lease_is_expected_now() -> None:
    a = Replica("a", 100, (Lease(80, NOW - 30),))
    r = reserve([a], job(1, 50), NOW)
    assert r is not None and (r.at, r.spare_bytes) == (NOW, 50)


def test_bad_jobs_are_refused() -> None:
    with pytest.raises(ValueError):
        job(1, -1)
    with pytest.raises(ValueError):
        job(1, 1, est=math.nan)


def test_a_big_job_is_not_starved_by_a_stream_of_small_ones() -> None:
    """Simulated clock, and small jobs that run 3x longer than they claim: the
    aging bound still starts the big job soon after it has waited its limit."""
    limit = 60.0
    running: list[tuple[float, int]] = []  # (actual end, bytes) on the one replica
    waiting = [job(0, 90, est=10)]
    t, i, started = NOW, 0, None
    while started is None:
        assert t < NOW + 10_000, "starved"
        while running and running[0][0] <= t:
            heapq.heappop(running)
        i += 1
        waiting.append(WaitingJob(f"s{i}", i, 20, t, 5.0))
        replica = Replica("a", 100, tuple(Lease(b, e - 10) for e, b in running))
        d = decide([replica], waiting, t, Policy(max_head_wait_s=limit))
        jobs = {j.id: j for j in waiting}
        for p in d.placements:
            started = t if p.job_id == "j0" else started
            heapq.heappush(
                running, (t + 3 * jobs[p.job_id].est_duration_s, jobs[p.job_id].kv_bytes)
            )
        waiting = [j for j in waiting if j.id not in placed(d)]
        t += 1.0
    # Once aged, it waits at most for the small jobs already running to finish.
    assert started - NOW <= limit + 1 + 15


# -- properties -----------------------------------------------------------------

# Mostly known ends, so that heads get reservations and later jobs try to pass.
ENDS = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]).flatmap(
    lambda k: st.just(math.inf) if k == 0 else st.floats(NOW - 20, NOW + 60)
)


@st.composite
def replicas(draw: st.DrawFn) -> list[Replica]:
    out = []
    for k in range(draw(st.integers(1, 3))):
        cap = draw(st.integers(0, 100))
        leases, used = [], 0
        for b in draw(st.lists(st.integers(1, 60), min_size=1, max_size=4)):
            if used + b <= cap:
                leases.append(Lease(b, draw(ENDS)))
                used += b
        out.append(Replica(f"r{k}", cap, tuple(leases), draw(st.booleans() | st.just(True))))
    return out


@st.composite
def queues(draw: st.DrawFn, ids: list[str]) -> list[WaitingJob]:
    n = draw(st.integers(0, 8))
    return [
        WaitingJob(
            f"j{i}",
            i,
            draw(st.integers(0, 120)),
            NOW - draw(st.floats(0, 100)),
            draw(st.floats(0, 60) | st.floats(0, 5) | st.just(math.inf)),
            draw(st.sampled_from([None, *ids])),
        )
        for i in range(n)
    ]


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Replica], list[WaitingJob], Policy]:
    rs = draw(replicas())
    return rs, draw(queues([r.id for r in rs])), Policy(draw(st.floats(0, 400)))


@settings(max_examples=examples(150, 400), deadline=None)
@given(cases())
def test_capacity_oversize_and_accepting(
    case: tuple[list[Replica], list[WaitingJob], Policy],
) -> None:
    rs, waiting, policy = case
    d = decide(rs, waiting, NOW, policy)
    largest = max(r.capacity_bytes for r in rs)
    assert set(d.oversize) == {j.id for j in waiting if j.kv_bytes > largest}
    down = {r.id for r in rs if not r.accepting}
    assert all(p.job_id not in d.oversize and p.replica_id not in down for p in d.placements)
    assert all(r.free_bytes >= 0 for r in apply(rs, waiting, d.placements, NOW))
    assert len({p.job_id for p in d.placements}) == len(d.placements)


@settings(max_examples=examples(150, 400), deadline=None)
@given(cases())
def test_backfill_never_delays_the_heads_reservation(
    case: tuple[list[Replica], list[WaitingJob], Policy],
) -> None:
    rs, waiting, policy = case
    d = decide(rs, waiting, NOW, policy)
    if d.head is None or d.aged:
        return
    head = next(j for j in waiting if j.id == d.head)
    before = [p for p in d.placements if p.rule is Rule.in_order]
    planned = reserve(apply(rs, waiting, before, NOW), head, NOW)
    after = reserve(apply(rs, waiting, d.placements, NOW), head, NOW)
    assert planned == d.reservation
    if planned is not None:
        assert after is not None and after.at <= planned.at


@settings(max_examples=examples(120, 300), deadline=None)
@given(cases())
def test_fifo_when_nothing_may_pass(case: tuple[list[Replica], list[WaitingJob], Policy]) -> None:
    """With the head aged (or every job the same size) admissions are a prefix of
    the queue, each on the replica it would get in strict FIFO order."""
    rs, waiting, _ = case
    d = decide(rs, waiting, NOW, Policy(max_head_wait_s=-1.0))
    queue = [j for j in sorted(waiting, key=lambda j: j.seq) if j.id not in d.oversize]
    assert [p.job_id for p in d.placements] == [j.id for j in queue[: len(d.placements)]]
    assert all(p.rule is Rule.in_order for p in d.placements)
    assert d.aged == (len(d.placements) < len(queue))

    same = [WaitingJob(j.id, j.seq, 30, j.waiting_since, j.est_duration_s) for j in waiting]
    d = decide(rs, same, NOW, Policy(max_head_wait_s=1e9))
    assert [p.job_id for p in d.placements] == [j.id for j in same[: len(d.placements)]]


@settings(max_examples=examples(120, 300), deadline=None)
@given(cases())
def test_first_job_takes_its_preferred_replica_else_the_most_free(
    case: tuple[list[Replica], list[WaitingJob], Policy],
) -> None:
    rs, waiting, policy = case
    d = decide(rs, waiting, NOW, policy)
    if not d.placements or d.placements[0].rule is not Rule.in_order:
        return
    first = next(j for j in waiting if j.id == d.placements[0].job_id)
    fits = [r for r in rs if r.accepting and r.free_bytes >= first.kv_bytes]
    chosen = d.placements[0].replica_id
    if first.preferred_replica in {r.id for r in fits}:
        assert chosen == first.preferred_replica
    else:
        assert next(r for r in fits if r.id == chosen).free_bytes == max(r.free_bytes for r in fits)


@settings(max_examples=examples(100, 200), deadline=None)
@given(cases(), st.randoms())
def test_input_order_does_not_matter(
    case: tuple[list[Replica], list[WaitingJob], Policy], rnd: random.Random
) -> None:
    rs, waiting, policy = case
    shuffled = list(waiting)
    rnd.shuffle(shuffled)
    assert decide(rs[::-1], shuffled, NOW, policy) == decide(rs, waiting, NOW, policy)
