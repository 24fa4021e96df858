"""Which waiting jobs start now, and on which replica: the admission policy, pure.

The KV ledger (service/ledger/) feeds it a snapshot read under its locks, and
the scheduling simulator feeds it a fake clock; both get the same answer from the
same code. Time is plain seconds on the caller's clock; ids are strings.

Inputs: the replicas of one role (KV capacity in bytes, the leases held there
with their bytes, expected end and tenant, whether the replica takes new work),
the role's waiting jobs (tenant, arrival `seq`, KV bytes, estimated duration,
waiting since, preferred replica), `now` and the `Policy` (aging bound, tenant
limits).

The order: FIFO within a tenant (`seq`, then id); between tenants, the head of the
least served one goes next (fewest KV bytes held on the role, counting what this
decision has placed; then fewest leases; then the earlier head), so a tenant with
one job is not queued behind another's 500. A tenant's head that has waited longer
than `Policy.max_head_wait_s` goes before every unaged one. With one tenant this is
plain arrival order. Taking jobs in that order:

1. A job larger than every replica's total capacity can never run: it is listed
   in `Decision.oversize` and otherwise ignored (the caller fails it).
2. Tenant limits. A tenant holding `tenant_max_running` leases on the role, or
   for whose next job no accepting replica is within its KV share, is held back
   for this decision: none of its jobs starts or becomes the head (FIFO within a
   tenant: its later, smaller jobs do not overtake the one held back), and it is
   listed in `Decision.limited`. The KV share: while another tenant (not at its
   running limit) has jobs waiting, a tenant may hold at most
   `tenant_max_kv_share` of a replica's capacity, except that a tenant holding
   nothing there may always start one job (else a job larger than the share
   would never run while anyone else waits). With nobody else waiting the whole
   pool is its own: the share is work-conserving, and it takes back nothing
   already leased; the head's reservation (3) is what protects a newcomer.
3. Until one job has to wait, each job starts on a replica where it fits now:
   its preferred replica (the prefix cache holds the document) if it fits
   there, else the replica with the most free bytes (ties: lowest id).
4. The first job that fits nowhere is the head. Its reservation is the earliest
   time T at which some accepting replica within its tenant's share frees enough
   bytes for it, found by releasing that replica's leases at their expected
   ends (an end already passed counts as now; an unknown end is infinite). The
   reservation is on the replica with the smallest T (ties: preferred, then
   most bytes spare at T, then lowest id); `spare` is what that replica still
   has free at T once the head starts there.
5. Aging: if the head has waited longer than `Policy.max_head_wait_s`, nothing
   passes it and the decision stops there. Estimates can be wrong; this bound is
   what guarantees that a 5M-token job is never starved by small ones, whichever
   tenants they belong to (it does not lift its own tenant's limits).
6. Otherwise each later job may start (EASY backfilling) on a replica where it
   fits now if it cannot delay the head's reservation, that is if one of:
   (a) the replica is not the one the head's reservation is on;
   (b) by its estimate it ends no later than T (its bytes are back by then);
   (c) its bytes fit in `spare`, which it then consumes.
   If the head has no finite reservation (no accepting replica can ever hold
   it, or only once a lease of unknown length ends) there is nothing to delay
   and jobs that fit may start; the aging bound still applies.
   Among the replicas a job may use, the preferred one wins, else the most free.

Only the head holds a reservation (EASY, not conservative backfilling): a job
behind it gets its own once it is the head, and by then it has usually waited
long enough for the aging bound to hold everything else back.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum


class Rule(StrEnum):
    """Why a job was allowed to start."""

    in_order = "in_order"
    other_replica = "other_replica"
    ends_before_reservation = "ends_before_reservation"
    fits_beside_head = "fits_beside_head"
    no_reservation = "no_reservation"


@dataclass(frozen=True)
class Lease:
    kv_bytes: int
    expected_end: float = math.inf
    # None: held by nobody the tenant limits know of (it still takes its bytes).
    tenant: str | None = None


@dataclass(frozen=True)
class Replica:
    id: str
    capacity_bytes: int
    leases: tuple[Lease, ...] = ()
    # False for a replica known to be down: it counts for "could this job ever
    # run" but receives no new work and holds no reservation.
    accepting: bool = True

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - sum(lease.kv_bytes for lease in self.leases)


@dataclass(frozen=True)
class WaitingJob:
    id: str
    seq: int
    kv_bytes: int
    waiting_since: float
    est_duration_s: float = math.inf
    preferred_replica: str | None = None
    tenant: str = ""

    def __post_init__(self) -> None:
        if self.kv_bytes < 0:
            raise ValueError(f"job {self.id}: negative kv_bytes {self.kv_bytes}")
        if not self.est_duration_s >= 0:  # also rejects NaN
            raise ValueError(f"job {self.id}: bad duration estimate {self.est_duration_s}")


@dataclass(frozen=True)
class Policy:
    max_head_wait_s: float = 900.0
    # Leases one tenant may hold at once on the role (None: no limit).
    tenant_max_running: int | None = None
    # The share of a replica's KV capacity one tenant may hold while another waits.
    tenant_max_kv_share: float = 1.0

    def __post_init__(self) -> None:
        if self.tenant_max_running is not None and self.tenant_max_running < 1:
            raise ValueError(f"tenant_max_running must be >= 1, got {self.tenant_max_running}")
        if not 0.0 < self.tenant_max_kv_share <= 1.0:
            raise ValueError(
                f"tenant_max_kv_share must be in (0, 1], got {self.tenant_max_kv_share}"
            )


@dataclass(frozen=True)
class Placement:
    job_id: str
    replica_id: str
    rule: Rule


@dataclass(frozen=True)
class Reservation:
    job_id: str
    replica_id: str
    at: float
    spare_bytes: int


@dataclass(frozen=True)
class Decision:
    placements: tuple[Placement, ...]
    oversize: tuple[str, ...]
    head: str | None = None
    reservation: Reservation | None = None
    aged: bool = False
    limited: tuple[str, ...] = ()  # tenants held back by their limits (rule 2)


@dataclass
class _State:
    id: str
    accepting: bool
    free: int
    capacity: int
    ends: list[tuple[float, int]] = field(default_factory=list)


class _Tenants:
    """What each tenant holds on the role, and which of its jobs are still to go."""

    def __init__(self, replicas: Sequence[Replica], jobs: list[WaitingJob], policy: Policy) -> None:
        self.policy = policy
        self.bytes: Counter[str] = Counter()
        self.leases: Counter[str] = Counter()
        self.on: Counter[tuple[str, str]] = Counter()  # (tenant, replica) -> bytes
        for r in replicas:
            for lease in r.leases:
                if lease.tenant is not None:
                    self.take(lease.tenant, r.id, lease.kv_bytes)
        self.queues: dict[str, deque[WaitingJob]] = {}
        for job in jobs:
            self.queues.setdefault(job.tenant, deque()).append(job)
        self.left = Counter({t: len(q) for t, q in self.queues.items()})
        self.limited: set[str] = set()

    def take(self, tenant: str, replica: str, kv_bytes: int) -> None:
        self.bytes[tenant] += kv_bytes
        self.leases[tenant] += 1
        self.on[tenant, replica] += kv_bytes

    def next(self, now: float) -> WaitingJob | None:
        heads = [q[0] for q in self.queues.values()]
        if not heads:
            return None
        aged = [h for h in heads if now - h.waiting_since > self.policy.max_head_wait_s]
        if aged:
            job = min(aged, key=_arrival)
        else:
            job = min(
                heads, key=lambda h: (self.bytes[h.tenant], self.leases[h.tenant], *_arrival(h))
            )
        self.queues[job.tenant].popleft()
        if not self.queues[job.tenant]:
            del self.queues[job.tenant]
        return job

    def at_running_limit(self, tenant: str) -> bool:
        limit = self.policy.tenant_max_running
        return limit is not None and self.leases[tenant] >= limit

    def hold_back(self, tenant: str) -> None:
        self.limited.add(tenant)
        self.queues.pop(tenant, None)

    def others_wait(self, tenant: str) -> bool:
        """Another tenant has jobs left that its running limit lets start."""
        return any(n and t != tenant and not self.at_running_limit(t) for t, n in self.left.items())

    def within_share(self, tenant: str, s: _State, kv_bytes: int) -> bool:
        held = self.on[tenant, s.id]
        return held == 0 or held + kv_bytes <= self.policy.tenant_max_kv_share * s.capacity


def _arrival(job: WaitingJob) -> tuple[int, str]:
    return job.seq, job.id


def decide(
    replicas: Sequence[Replica],
    waiting: Iterable[WaitingJob],
    now: float,
    policy: Policy | None = None,
) -> Decision:
    """Admissions for one role at `now`; see the module docstring for the rule."""
    policy = policy or Policy()
    states = _states(replicas, now)
    largest = max((r.capacity_bytes for r in replicas), default=None)
    jobs = sorted(waiting, key=_arrival)
    oversize = [j.id for j in jobs if largest is not None and j.kv_bytes > largest]
    big = set(oversize)
    tenants = _Tenants(replicas, [j for j in jobs if j.id not in big], policy)
    placements: list[Placement] = []
    head: WaitingJob | None = None
    reservation: Reservation | None = None
    spare = 0  # what backfilled jobs have left of the reservation's spare bytes
    aged = False

    while (job := tenants.next(now)) is not None:
        if tenants.at_running_limit(job.tenant):
            tenants.hold_back(job.tenant)
            continue
        usable = [s for s in states if s.accepting]
        if policy.tenant_max_kv_share < 1.0 and tenants.others_wait(job.tenant):
            usable = [s for s in usable if tenants.within_share(job.tenant, s, job.kv_bytes)]
            if not usable:
                tenants.hold_back(job.tenant)
                continue
        fits = [s for s in usable if s.free >= job.kv_bytes]
        if head is None:
            if fits:
                placements.append(_place(_choose(fits, job), job, now, Rule.in_order, tenants))
                continue
            head = job
            aged = now - job.waiting_since > policy.max_head_wait_s
            if aged:
                break
            reservation = _reserve(usable, job, now)
            spare = reservation.spare_bytes if reservation else 0
            continue
        allowed = {s.id: r for s in fits if (r := _may_pass(s, job, reservation, spare, now))}
        if not allowed:
            continue
        state = _choose([s for s in fits if s.id in allowed], job)
        rule = allowed[state.id]
        if rule is Rule.fits_beside_head:
            spare -= job.kv_bytes
        placements.append(_place(state, job, now, rule, tenants))

    return Decision(
        tuple(placements),
        tuple(oversize),
        head.id if head else None,
        reservation,
        aged,
        tuple(sorted(tenants.limited)),
    )


def reserve(replicas: Sequence[Replica], job: WaitingJob, now: float) -> Reservation | None:
    """The earliest finite time and replica at which `job` would fit, or None."""
    return _reserve(_states(replicas, now), job, now)


def apply(
    replicas: Sequence[Replica],
    waiting: Iterable[WaitingJob],
    placements: Iterable[Placement],
    now: float,
) -> tuple[Replica, ...]:
    """The replicas after `placements` started at `now`, each a lease to its estimate."""
    jobs = {j.id: j for j in waiting}
    added: dict[str, list[Lease]] = {}
    for p in placements:
        job = jobs[p.job_id]
        added.setdefault(p.replica_id, []).append(Lease(job.kv_bytes, now + job.est_duration_s))
    return tuple(replace(r, leases=r.leases + tuple(added.get(r.id, ()))) for r in replicas)


def _states(replicas: Sequence[Replica], now: float) -> list[_State]:
    # An overrunning lease is expected to end any moment: at `now`, not in the past.
    return [
        _State(
            r.id,
            r.accepting,
            r.free_bytes,
            r.capacity_bytes,
            [(max(lease.expected_end, now), lease.kv_bytes) for lease in r.leases],
        )
        for r in sorted(replicas, key=lambda r: r.id)
    ]


def _place(state: _State, job: WaitingJob, now: float, rule: Rule, tenants: _Tenants) -> Placement:
    state.free -= job.kv_bytes
    tenants.take(job.tenant, state.id, job.kv_bytes)
    tenants.left[job.tenant] -= 1
    state.ends.append((now + job.est_duration_s, job.kv_bytes))
    return Placement(job.id, state.id, rule)


def _choose(candidates: list[_State], job: WaitingJob) -> _State:
    for s in candidates:
        if s.id == job.preferred_replica:
            return s
    return min(candidates, key=lambda s: (-s.free, s.id))


def _reserve(states: list[_State], job: WaitingJob, now: float) -> Reservation | None:
    best: tuple[tuple[float, bool, int, str], Reservation] | None = None
    for s in states:
        if not s.accepting:
            continue
        at, free = _earliest_fit(s, job.kv_bytes, now)
        if not math.isfinite(at):
            continue
        spare = free - job.kv_bytes
        key = (at, s.id != job.preferred_replica, -spare, s.id)
        if best is None or key < best[0]:
            best = (key, Reservation(job.id, s.id, at, spare))
    return best[1] if best else None


def _earliest_fit(state: _State, need: int, now: float) -> tuple[float, int]:
    """When the replica first has `need` bytes free, and how many it has then;
    every lease ending at that same instant counts as ended."""
    free, at = state.free, now
    ends = sorted(state.ends)
    i = 0
    while free < need and i < len(ends):
        at = ends[i][0]
        while i < len(ends) and ends[i][0] == at:
            free += ends[i][1]
            i += 1
    return (at, free) if free >= need else (math.inf, free)


def _may_pass(
    state: _State, job: WaitingJob, reservation: Reservation | None, spare: int, now: float
) -> Rule | None:
    if reservation is None:
        return Rule.no_reservation
    if state.id != reservation.replica_id:
        return Rule.other_replica
    if now + job.est_duration_s <= reservation.at:
        return Rule.ends_before_reservation
    if job.kv_bytes <= spare:
        return Rule.fits_beside_head
    return None
