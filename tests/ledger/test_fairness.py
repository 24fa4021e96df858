"""Fairness between tenants in the admission policy, on its own: worked cases, a
simulated clock for the 500-against-1 case and the aging bound, then properties."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field

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


def job(tenant: str, i: int, kv: int, est: float = math.inf, waited: float = 0.0) -> WaitingJob:
    return WaitingJob(f"{tenant}{i}", i, kv, NOW - waited, est, tenant=tenant)


def by_tenant(d: Decision) -> Counter[str]:
    return Counter(p.job_id[0] for p in d.placements)


# -- worked cases ---------------------------------------------------------------


def test_the_least_served_tenants_head_goes_first() -> None:
    # A holds the whole pool and has 500 more waiting; B's one job came last.
    a = Replica("a", 100, tuple(Lease(10, NOW + 1 + i, "A") for i in range(10)))
    waiting = [job("A", i, 10, est=5) for i in range(500)] + [job("B", 500, 10, est=5)]
    d = decide([a], waiting, NOW)
    assert d.head == "B500" and d.reservation is not None
    assert d.reservation.at == NOW + 1  # the first of A's leases to end
    assert d.placements == ()
    # One tenant (the old single queue): A's next job is the head, B's is 501st.
    one = Replica("a", 100, tuple(Lease(x.kv_bytes, x.expected_end) for x in a.leases))
    same = [WaitingJob(j.id, j.seq, j.kv_bytes, j.waiting_since, j.est_duration_s) for j in waiting]
    assert decide([one], same, NOW).head == "A0"


def test_tenants_take_turns_when_nothing_is_held() -> None:
    waiting = [job("A", i, 10) for i in range(6)] + [job("B", 10 + i, 10) for i in range(6)]
    d = decide([Replica("a", 60)], waiting, NOW)
    assert [p.job_id for p in d.placements] == ["A0", "B10", "A1", "B11", "A2", "B12"]


def test_kv_share_holds_while_another_tenant_waits() -> None:
    # B's job needs 95 of 100 and cannot start beside A's first; A's next jobs end
    # before B's reservation, so backfilling alone would let A fill the replica.
    waiting = [job("A", i, 10, est=5) for i in range(8)] + [job("B", 8, 95, est=5)]
    capped = decide([Replica("a", 100)], waiting, NOW, Policy(tenant_max_kv_share=0.5))
    assert capped.head == "B8" and by_tenant(capped) == {"A": 5}
    assert capped.limited == ("A",)
    free = decide([Replica("a", 100)], waiting, NOW, Policy(tenant_max_kv_share=1.0))
    assert by_tenant(free) == {"A": 8} and free.limited == ()


def test_kv_share_is_work_conserving_when_alone() -> None:
    alone = [job("A", i, 10) for i in range(10)]
    d = decide([Replica("a", 100)], alone, NOW, Policy(tenant_max_kv_share=0.3))
    assert by_tenant(d) == {"A": 10} and d.limited == ()
    # As soon as someone else waits (B, whose job cannot fit before C's lease of
    # unknown length ends), A is held to 30%.
    a = Replica("a", 100, (Lease(20, math.inf, "C"),))
    d = decide([a], [*alone, job("B", 99, 90)], NOW, Policy(tenant_max_kv_share=0.3))
    assert by_tenant(d) == {"A": 3} and d.limited == ("A",)


def test_a_tenant_holding_nothing_may_start_one_job_larger_than_its_share() -> None:
    waiting = [job("A", 0, 40), job("A", 1, 40), job("B", 2, 50, est=1)]
    a = Replica("a", 100, (Lease(50, NOW + 1, "C"),))
    d = decide([a], waiting, NOW, Policy(tenant_max_kv_share=0.3))
    assert [p.job_id for p in d.placements] == ["A0"]
    assert d.limited == ("A",) and d.head == "B2"


def test_kv_share_is_per_replica() -> None:
    # A is at its share on r0 but holds nothing on r1: its job goes to r1.
    r0 = Replica("r0", 100, (Lease(50, NOW + 9, "A"),))
    r1 = Replica("r1", 100, (Lease(90, NOW + 9, "C"),))
    waiting = [job("A", 0, 10), job("B", 1, 95)]
    d = decide([r0, r1], waiting, NOW, Policy(tenant_max_kv_share=0.5))
    assert [(p.job_id, p.replica_id) for p in d.placements] == [("A0", "r1")]


def test_running_limit_holds_a_tenant_back_and_others_pass() -> None:
    a = Replica("a", 100, (Lease(10, NOW + 9, "A"), Lease(10, NOW + 9, "A")))
    waiting = [job("A", i, 10) for i in range(5)] + [job("B", 9, 10)]
    d = decide([a], waiting, NOW, Policy(tenant_max_running=3))
    assert by_tenant(d) == {"A": 1, "B": 1} and d.limited == ("A",)
    assert decide([a], waiting, NOW, Policy(tenant_max_running=2)).placements[0].job_id == "B9"


def test_a_limited_tenants_later_jobs_do_not_overtake_its_first() -> None:
    a = Replica("a", 100, (Lease(30, NOW + 9, "A"),))
    waiting = [job("A", 0, 40), job("A", 1, 5), job("B", 2, 90)]
    d = decide([a], waiting, NOW, Policy(tenant_max_kv_share=0.5))
    assert d.placements == () and d.limited == ("A",) and d.head == "B2"


def test_an_aged_head_goes_before_the_least_served_tenant() -> None:
    a = Replica("a", 100, (Lease(60, NOW + 10, "A"),))
    waiting = [job("A", 0, 70, waited=100), job("B", 1, 10, est=1)]
    young = decide([a], waiting, NOW, Policy(max_head_wait_s=200))
    # Unaged, B (holding nothing) goes first and starts; A's job is the head.
    assert young.head == "A0" and by_tenant(young) == {"B": 1}
    old = decide([a], waiting, NOW, Policy(max_head_wait_s=50))
    assert old.head == "A0" and old.aged and old.placements == ()


# -- a simulated clock ----------------------------------------------------------


@dataclass
class Sim:
    """One role, jobs that run exactly their estimate, a decision at every event."""

    capacity: tuple[int, ...]
    policy: Policy
    t: float = NOW
    running: list[tuple[float, str, str, int, str]] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)

    def replicas(self) -> list[Replica]:
        held: dict[str, list[Lease]] = {}
        for end, rid, tenant, kv, _ in self.running:
            held.setdefault(rid, []).append(Lease(kv, end, tenant))
        return [
            Replica(f"r{i}", c, tuple(held.get(f"r{i}", ()))) for i, c in enumerate(self.capacity)
        ]

    def step(self, waiting: list[WaitingJob]) -> list[WaitingJob]:
        d = decide(self.replicas(), waiting, self.t, self.policy)
        jobs = {j.id: j for j in waiting}
        for p in d.placements:
            j = jobs[p.job_id]
            heapq.heappush(
                self.running, (self.t + j.est_duration_s, p.replica_id, j.tenant, j.kv_bytes, j.id)
            )
            self.started[j.id] = self.t
        left = [j for j in waiting if j.id not in self.started]
        # On to the next lease end.
        self.t = self.running[0][0] if self.running else self.t + 1
        while self.running and self.running[0][0] <= self.t:
            heapq.heappop(self.running)
        return left


def test_one_job_of_b_starts_within_a_round_not_after_as_500() -> None:
    def run(tenant_of_b: str) -> tuple[float, float, int]:
        sim = Sim((100,), Policy())
        waiting = [WaitingJob(f"A{i}", i, 10, NOW, 5.0, tenant="A") for i in range(500)]
        waiting = sim.step(waiting)  # A's first ten take the pool
        arrived = sim.t
        waiting.append(WaitingJob("B", 500, 10, arrived, 5.0, tenant=tenant_of_b))
        while "B" not in sim.started:
            waiting = sim.step(waiting)
        b = sim.started["B"]
        return arrived, b, sum(1 for k, t in sim.started.items() if k != "B" and t < b)

    arrived, started, a_before = run("B")
    assert started == arrived and a_before == 10  # the first decision after it came
    arrived, fifo_started, fifo_before = run("A")  # one tenant: the old single queue
    assert fifo_before == 500
    assert fifo_started - arrived > 10 * (started - arrived + 5.0)


@pytest.mark.parametrize(("a_holds", "share"), [(0, 0.5), (40, 1.0)])
def test_the_aging_bound_holds_for_a_big_job_among_tenants_streaming_small_ones(
    a_holds: int, share: float
) -> None:
    """B and C stream small jobs that run 3x longer than they claim; A's big job
    still starts soon after it has waited its limit: with the KV share on, and when
    A also holds a lease of its own (so that A is not the least served tenant)."""
    limit = 60.0
    # B and C already run one small job each when A's big one arrives.
    running: list[tuple[float, int, str]] = [(NOW + 15, 20, "B"), (NOW + 15, 20, "C")]
    waiting = [WaitingJob("big", 0, 90, NOW, 10.0, tenant="A")]
    t, i, started = NOW, 0, None
    policy = Policy(max_head_wait_s=limit, tenant_max_kv_share=share)
    own = (Lease(a_holds, math.inf, "A"),) if a_holds else ()
    while started is None:
        assert t < NOW + 1_000, "starved"
        while running and running[0][0] <= t:
            heapq.heappop(running)
        for tenant in "BC":
            i += 1
            waiting.append(WaitingJob(f"{tenant}{i}", i, 20, t, 5.0, tenant=tenant))
        leases = own + tuple(Lease(b, e - 10, who) for e, b, who in running)
        replica = Replica("a", 100 + a_holds, leases)
        d = decide([replica], waiting, t, policy)
        jobs = {j.id: j for j in waiting}
        for p in d.placements:
            started = t if p.job_id == "big" else started
            j = jobs[p.job_id]
            heapq.heappush(running, (t + 3 * j.est_duration_s, j.kv_bytes, j.tenant))
        waiting = [j for j in waiting if j.id not in {p.job_id for p in d.placements}]
        t += 1.0
    assert started - NOW <= limit + 1 + 15


# -- properties -----------------------------------------------------------------

ENDS = st.sampled_from(range(10)).flatmap(
    lambda k: st.just(math.inf) if k == 0 else st.floats(NOW - 20, NOW + 60)
)
TENANTS = st.sampled_from("ABC")


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[Replica], list[WaitingJob], Policy]:
    rs = []
    for k in range(draw(st.integers(1, 3))):
        cap = draw(st.integers(0, 100))
        leases, used = [], 0
        for b in draw(st.lists(st.integers(1, 60), max_size=4)):
            if used + b <= cap:
                leases.append(Lease(b, draw(ENDS), draw(TENANTS | st.none())))
                used += b
        rs.append(Replica(f"r{k}", cap, tuple(leases), draw(st.booleans() | st.just(True))))
    waiting = [
        WaitingJob(
            f"j{i}",
            i,
            draw(st.integers(0, 80)),
            NOW - draw(st.floats(0, 100)),
            draw(st.floats(0, 60) | st.just(math.inf)),
            draw(st.sampled_from([None, *(r.id for r in rs)])),
            draw(TENANTS),
        )
        for i in range(draw(st.integers(0, 10)))
    ]
    policy = Policy(
        draw(st.floats(0, 400)),
        draw(st.none() | st.integers(1, 4)),
        draw(st.sampled_from([0.25, 0.5, 0.75, 1.0])),
    )
    return rs, waiting, policy


Case = tuple[list[Replica], list[WaitingJob], Policy]


@settings(max_examples=examples(200, 500), deadline=None)
@given(cases())
def test_capacity_and_running_limits_hold(case: Case) -> None:
    rs, waiting, policy = case
    d = decide(rs, waiting, NOW, policy)
    assert all(r.free_bytes >= 0 for r in apply(rs, waiting, d.placements, NOW))
    assert len({p.job_id for p in d.placements}) == len(d.placements)
    assert not {p.job_id for p in d.placements} & set(d.oversize)
    if policy.tenant_max_running is not None:
        jobs = {j.id: j for j in waiting}
        before = Counter(lease.tenant for r in rs for lease in r.leases)
        added = Counter(jobs[p.job_id].tenant for p in d.placements)
        for tenant, n in added.items():
            assert before[tenant] + n <= policy.tenant_max_running


@settings(max_examples=examples(200, 500), deadline=None)
@given(cases())
def test_no_tenant_passes_its_kv_share_while_another_waits(case: Case) -> None:
    """Replayed in the order of the placements: each one either finds no other
    tenant (under its running limit) waiting, or its tenant holding nothing on the
    replica, or stays within the share."""
    rs, waiting, policy = case
    d = decide(rs, waiting, NOW, policy)
    jobs = {j.id: j for j in waiting if j.id not in d.oversize}
    caps = {r.id: r.capacity_bytes for r in rs}
    held: Counter[tuple[str | None, str]] = Counter()
    for r in rs:
        for lease in r.leases:
            held[lease.tenant, r.id] += lease.kv_bytes
    leases = Counter(lease.tenant for r in rs for lease in r.leases)
    left = Counter(j.tenant for j in jobs.values())
    for p in d.placements:
        j = jobs[p.job_id]
        limit = policy.tenant_max_running
        others = any(
            n and t != j.tenant and (limit is None or leases[t] < limit) for t, n in left.items()
        )
        h = held[j.tenant, p.replica_id]
        if others:
            assert h == 0 or h + j.kv_bytes <= policy.tenant_max_kv_share * caps[p.replica_id]
        held[j.tenant, p.replica_id] += j.kv_bytes
        leases[j.tenant] += 1
        left[j.tenant] -= 1


@settings(max_examples=examples(200, 500), deadline=None)
@given(cases())
def test_backfill_never_delays_the_heads_reservation_among_tenants(case: Case) -> None:
    rs, waiting, policy = case
    d = decide(rs, waiting, NOW, policy)
    if d.reservation is None:
        return
    head = next(j for j in waiting if j.id == d.head)
    there = [r for r in apply(rs, waiting, d.placements, NOW) if r.id == d.reservation.replica_id]
    after = reserve(there, head, NOW)
    assert after is not None and after.at <= d.reservation.at


@settings(max_examples=examples(200, 500), deadline=None)
@given(cases())
def test_fifo_within_a_tenant_before_the_head(case: Case) -> None:
    rs, waiting, policy = case
    d = decide(rs, waiting, NOW, policy)
    jobs = {j.id: j for j in waiting}
    for tenant in "ABC":
        queue = [j.id for j in sorted(waiting, key=lambda j: j.seq) if j.tenant == tenant]
        queue = [i for i in queue if i not in d.oversize]
        first = [
            p.job_id
            for p in d.placements
            if p.rule is Rule.in_order and jobs[p.job_id].tenant == tenant
        ]
        assert first == queue[: len(first)]


@settings(max_examples=examples(100, 200), deadline=None)
@given(cases(), st.randoms())
def test_input_order_does_not_matter_among_tenants(case: Case, rnd: random.Random) -> None:
    rs, waiting, policy = case
    shuffled = list(waiting)
    rnd.shuffle(shuffled)
    assert decide(rs[::-1], shuffled, NOW, policy) == decide(rs, waiting, NOW, policy)
