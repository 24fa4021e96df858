"""The decision: jobs in tenant-fair order, each placed where it fits until one has to
wait; that head's reservation, and the EASY backfilling around it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace

from ingestion.capacity.admission.order import aged as is_aged
from ingestion.capacity.admission.order import queue_key
from ingestion.capacity.admission.tenants import ReplicaState, TenantBook
from ingestion.capacity.admission.values import (
    Decision,
    Lease,
    Placement,
    Policy,
    Replica,
    Reservation,
    Rule,
    WaitingJob,
)


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
    jobs = sorted(waiting, key=lambda j: queue_key(j, now, policy))
    oversize = [j.id for j in jobs if largest is not None and j.kv_bytes > largest]
    big = set(oversize)
    tenants = TenantBook(replicas, [j for j in jobs if j.id not in big], policy)
    placements: list[Placement] = []
    head: WaitingJob | None = None
    reservation: Reservation | None = None
    spare = 0  # what backfilled jobs have left of the reservation's spare bytes
    aged = False
    # Where this decision placed a job of each affinity: a later one follows it there.
    cached: dict[str, str] = {}

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
                state = _choose(fits, job, cached)
                placements.append(_place(state, job, now, Rule.in_order, tenants, cached))
                continue
            head = job
            aged = is_aged(job, now, policy)
            if aged:
                break
            reservation = _reserve(usable, job, now)
            spare = reservation.spare_bytes if reservation else 0
            continue
        allowed = {s.id: r for s in fits if (r := _may_pass(s, job, reservation, spare, now))}
        if not allowed:
            continue
        state = _choose([s for s in fits if s.id in allowed], job, cached)
        rule = allowed[state.id]
        if rule is Rule.fits_beside_head:
            spare -= job.kv_bytes
        placements.append(_place(state, job, now, rule, tenants, cached))

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


def _states(replicas: Sequence[Replica], now: float) -> list[ReplicaState]:
    # An overrunning lease is expected to end any moment: at `now`, not in the past.
    return [
        ReplicaState(
            r.id,
            r.accepting,
            r.free_bytes,
            r.capacity_bytes,
            [(max(lease.expected_end, now), lease.kv_bytes) for lease in r.leases],
        )
        for r in sorted(replicas, key=lambda r: r.id)
    ]


def _place(
    state: ReplicaState,
    job: WaitingJob,
    now: float,
    rule: Rule,
    tenants: TenantBook,
    cached: dict[str, str],
) -> Placement:
    state.free -= job.kv_bytes
    if job.affinity is not None:
        cached[job.affinity] = state.id
    tenants.take(job.tenant, state.id, job.kv_bytes)
    tenants.left[job.tenant] -= 1
    state.ends.append((now + job.est_duration_s, job.kv_bytes))
    return Placement(job.id, state.id, rule)


def _choose(
    candidates: list[ReplicaState], job: WaitingJob, cached: dict[str, str]
) -> ReplicaState:
    # The replica named for it, else the one a job of its affinity just went to (its
    # prefix is being computed there now), else the most free.
    preferred = job.preferred_replica
    if preferred is None and job.affinity is not None:
        preferred = cached.get(job.affinity)
    for s in candidates:
        if s.id == preferred:
            return s
    return min(candidates, key=lambda s: (-s.free, s.id))


def _reserve(states: list[ReplicaState], job: WaitingJob, now: float) -> Reservation | None:
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


def _earliest_fit(state: ReplicaState, need: int, now: float) -> tuple[float, int]:
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
    state: ReplicaState, job: WaitingJob, reservation: Reservation | None, spare: int, now: float
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
