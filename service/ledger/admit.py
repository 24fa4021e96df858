"""Admission: under the write lock on a role's backends, place the waiting jobs that
`ingestion.capacity.admission` allows, each with a new lease, in one transaction."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from ingestion.capacity import admission
from service.db import NO_SYNC, retry_conflicts, rows_changed, write_transaction
from service.ledger.candidates import candidates, last_served, waiting_job
from service.ledger.reaping import reap
from service.metrics.definitions import record_admission_wait
from service.models import Backend, Job, JobStatus, KvLease
from service.webhooks import outbox

_WAITING = JobStatus.waiting_for_capacity


class LedgerError(RuntimeError):
    """The ledger caught itself about to break an invariant; nothing was written."""


@dataclass(frozen=True)
class Admitted:
    job_id: uuid.UUID
    backend_id: uuid.UUID
    lease_id: uuid.UUID
    kv_bytes: int
    expires_at: datetime
    rule: admission.Rule


@dataclass(frozen=True)
class AdmitResult:
    admitted: tuple[Admitted, ...]
    failed: tuple[tuple[uuid.UUID, str], ...]  # (job, reason): larger than every replica
    expired: tuple[uuid.UUID, ...]  # jobs whose dead lease this call reaped
    head: uuid.UUID | None  # the first job left waiting
    reservation_at: datetime | None  # when the head is expected to fit


@retry_conflicts
def try_admit(
    session: Session,
    role: str,
    now: datetime,
    ttl_s: float,
    *,
    policy: admission.Policy | None = None,
    max_attempts: int = 3,
    max_scan: int = 1000,
    max_scan_per_tenant: int = 100,
    ready_after: datetime | None = None,
) -> AdmitResult:
    """Admit what `ingestion.capacity.admission` allows on `role`'s replicas, in one
    transaction; on the way, reap dead leases there (as `expire` does) and fail
    waiting jobs larger than every replica of the role.

    `ready_after`: only jobs whose `heartbeat_at` is later are candidates. Workers
    pass it so that a job is admitted only while a task is there to run it; a lease
    nobody runs would hold its bytes until it expired.

    The policy sees at most `max_scan_per_tenant` waiting jobs of each tenant (its
    first ones in the policy's order: aged, interactive, batch) and `max_scan` in all,
    every tenant's first before any tenant's second: a tenant with thousands waiting
    cannot push another's job out of view."""
    with write_transaction(session):
        backends = session.execute(
            select(Backend.id, Backend.kv_capacity_bytes, Backend.healthy)
            .where(Backend.role == role)
            .order_by(Backend.id)
            .with_for_update(key_share=True)
        ).all()
        ids = [b.id for b in backends]
        expired = reap(session, ids, now, max_attempts) if ids else []
        held: dict[uuid.UUID, list[admission.Lease]] = {}
        # Each lease with its job's tenant, for the tenant limits (a plain read of jobs:
        # the lock order stays backends, leases, jobs).
        leases = select(
            KvLease.backend_id, KvLease.kv_bytes, KvLease.expected_end_at, Job.tenant_id
        )
        leases = leases.join(Job, Job.id == KvLease.job_id)
        for b_id, kv_bytes, end, tenant in session.execute(
            leases.where(KvLease.backend_id.in_(ids), KvLease.expires_at > now)
        ):
            lease = admission.Lease(kv_bytes, end.timestamp() if end else math.inf, str(tenant))
            held.setdefault(b_id, []).append(lease)
        # Unknown capacity is never taken as infinite: such a replica gets nothing.
        replicas = [
            admission.Replica(str(b.id), b.kv_capacity_bytes, tuple(held.get(b.id, ())), b.healthy)
            for b in backends
            if b.kv_capacity_bytes is not None
        ]
        policy = policy or admission.Policy()
        jobs = candidates(session, role, now, policy, ready_after, max_scan, max_scan_per_tenant)
        by_id = {str(j.id): j for j in jobs}
        served = last_served(session, role, jobs)
        waiting = [waiting_job(j, served) for j in jobs]
        decision = admission.decide(replicas, waiting, now.timestamp(), policy)

        largest = max((r.capacity_bytes for r in replicas), default=0)
        # While some replica's capacity is unknown it might be the one that fits:
        # the job waits instead of failing.
        unknown = any(b.kv_capacity_bytes is None for b in backends)
        failed = []
        oversize = [] if unknown else [by_id[i] for i in decision.oversize]
        failing = _lock_waiting(session, [j.id for j in oversize], None)
        for job in (j for j in oversize if j.id in failing):
            reason = f"needs {job.kv_bytes} B of KV cache; the largest {role} replica has {largest}"
            stmt = update(Job).where(Job.id == job.id, Job.status == _WAITING)
            values = {"status": JobStatus.failed, "error_reason": reason, "finished_at": now}
            if rows_changed(session.execute(stmt.values(values), execution_options=NO_SYNC)):
                failed.append((job.id, reason))
        outbox.jobs_ended(session, [job_id for job_id, _ in failed], now)
        placeable = _lock_waiting(session, [by_id[p.job_id].id for p in decision.placements],
                                  ready_after)  # fmt: skip
        admitted = [
            a
            for p in decision.placements
            if by_id[p.job_id].id in placeable
            and (a := _admit(session, by_id[p.job_id], p, now, ttl_s))
        ]
        caps = {b.id: b.kv_capacity_bytes for b in backends}
        _check(session, {a.backend_id for a in admitted}, caps)
        waits = [_waited(by_id[str(a.job_id)], now) for a in admitted]
    for waited in waits:  # committed: each admission observed once
        record_admission_wait(role, waited)

    res = decision.reservation
    return AdmitResult(
        tuple(admitted),
        tuple(failed),
        tuple(expired),
        uuid.UUID(decision.head) if decision.head else None,
        datetime.fromtimestamp(res.at, UTC) if res else None,
    )


def _lock_waiting(
    session: Session, job_ids: list[uuid.UUID], ready_after: datetime | None
) -> set[uuid.UUID]:
    """Lock the jobs admission chose to place (or fail), skipping any locked
    elsewhere; of those, the ones still waiting and (with `ready_after`) whose task
    still polls for them: a task that gave up its poll after admission read the
    queue is not admitted behind its back."""
    if not job_ids:
        return set()
    stmt = select(Job.id).where(Job.id.in_(job_ids), Job.status == _WAITING)
    if ready_after is not None:
        stmt = stmt.where(Job.heartbeat_at > ready_after)
    stmt = stmt.order_by(Job.id).with_for_update(key_share=True, skip_locked=True)
    return set(session.scalars(stmt))


def _admit(
    session: Session, job: Any, placement: admission.Placement, now: datetime, ttl_s: float
) -> Admitted | None:
    backend_id = uuid.UUID(placement.replica_id)
    waited = _waited(job, now)
    stmt = update(Job).where(Job.id == job.id, Job.status == _WAITING)
    moved = stmt.values(
        status=JobStatus.running,
        attempts=Job.attempts + 1,
        backend_id=backend_id,
        admitted_at=now,
        heartbeat_at=now,
        waiting_since=None,
        kv_wait_s=(job.kv_wait_s or 0.0) + waited,
    )
    if rows_changed(session.execute(moved, execution_options=NO_SYNC)) != 1:
        return None  # cancelled meanwhile: its bytes simply stay free
    lease_id, expires, est = uuid.uuid4(), now + timedelta(seconds=ttl_s), job.est_duration_s
    session.execute(
        insert(KvLease).values(
            id=lease_id,
            job_id=job.id,
            backend_id=backend_id,
            kv_bytes=job.kv_bytes,
            kv_blocks=job.kv_blocks or 0,
            created_at=now,
            expires_at=expires,
            expected_end_at=None if est is None else now + timedelta(seconds=est),
        )
    )
    return Admitted(job.id, backend_id, lease_id, job.kv_bytes, expires, placement.rule)


def _waited(job: Any, now: datetime) -> float:
    since: datetime = job.waiting_since or job.created_at
    return max((now - since).total_seconds(), 0.0)


def _check(
    session: Session, backend_ids: set[uuid.UUID], capacities: dict[uuid.UUID, int | None]
) -> None:
    """Belt and braces: after admitting, all lease rows on the backends admitted to
    (expired or not) must fit in capacity, or the whole admission is undone."""
    stmt = select(KvLease.backend_id, func.sum(KvLease.kv_bytes))
    stmt = stmt.where(KvLease.backend_id.in_(backend_ids)).group_by(KvLease.backend_id)
    for backend_id, leased in session.execute(stmt) if backend_ids else ():
        cap = capacities[backend_id]
        if cap is None or int(leased) > cap:
            raise LedgerError(f"backend {backend_id}: {leased} B leased of {cap}")
