"""The KV ledger: leases that reserve a job's KV-cache bytes on one vLLM replica.

A job runs only while it holds a lease. Every function takes `now` from the caller
(workers pass `utcnow()`, tests and the simulator their own clock) and owns its
transaction; `release(commit=False)` leaves the commit to the caller so the job's
Result can land in the same transaction.

Invariants, on Postgres and SQLite alike:
- a lease exists iff its job is `running`: both change in one transaction;
- the bytes of all lease rows on a backend never exceed its capacity.

Why the second holds under concurrency: only `try_admit` inserts leases, and only
while holding the write lock on its role's backends: `SELECT … FOR NO KEY UPDATE`
ordered by id on Postgres (admitters queue instead of deadlocking, and foreign key
checks from other tables are not blocked), `BEGIN IMMEDIATE` on SQLite (the
database-wide write lock). Under that lock it first deletes the expired leases it
is about to ignore, and only then counts the rest. So an expired lease is never
counted as free while its row exists, and a late heartbeat cannot revive it once
it has been: the row is gone.

Lock order, for every transaction that touches these tables on Postgres (renew,
release, try_admit and its reaping, expire, a run's end and fan-in in
`workers/jobs/run.py`, cancel and `service.jobs.tree.end_tree`, planning, the
sweeper), so that none can deadlock another:
1. backends, by id (admission, `expire`, and the refresher, `service/backends/discovery.py`);
2. jobs (`FOR NO KEY UPDATE`, `service.jobs.tree.lock`): a map-reduce job before its
   requests; jobs of one level by id;
3. leases, only ever touched while their job is locked.
Admission breaks no rule by taking a job lock out of order, because it never waits
for one: a job about to be placed that is locked elsewhere (being cancelled,
claimed) is skipped this round (`SKIP LOCKED`). A transaction that Postgres aborts
anyway (a deadlock victim, a serialization failure) is run again
(`service.db.retry_conflicts`); on SQLite `BEGIN IMMEDIATE` serializes writers.

Workers should hand `renew` and `release` the `lease_id` they were admitted with:
it fences a worker whose lease expired, and whose job was admitted again under a
new lease, off its successor's lease.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ingestion.capacity import admission
from service.db import NO_SYNC, retry_conflicts, rows_changed, write_transaction
from service.jobs.tree import lock
from service.models import FINAL, Backend, Job, JobStatus, KvLease

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


@dataclass(frozen=True)
class Capacity:
    backend_id: uuid.UUID
    role: str
    url: str
    healthy: bool
    total_bytes: int | None
    leased_bytes: int
    free_bytes: int | None
    leases: int


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
    first ones) and `max_scan` in all, every tenant's first before any tenant's
    second: a tenant with thousands waiting cannot push another's job out of view."""
    with write_transaction(session):
        backends = session.execute(
            select(Backend.id, Backend.kv_capacity_bytes, Backend.healthy)
            .where(Backend.role == role)
            .order_by(Backend.id)
            .with_for_update(key_share=True)
        ).all()
        ids = [b.id for b in backends]
        expired = _reap(session, ids, now, max_attempts) if ids else []
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
        jobs = _candidates(session, role, ready_after, max_scan, max_scan_per_tenant)
        by_id = {str(j.id): j for j in jobs}
        served = _last_served(session, role, jobs)
        waiting = [_waiting(j, served) for j in jobs]
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

    res = decision.reservation
    return AdmitResult(
        tuple(admitted),
        tuple(failed),
        tuple(expired),
        uuid.UUID(decision.head) if decision.head else None,
        datetime.fromtimestamp(res.at, UTC) if res else None,
    )


@retry_conflicts
def renew(
    session: Session,
    job_id: uuid.UUID,
    now: datetime,
    ttl_s: float,
    *,
    lease_id: uuid.UUID | None = None,
) -> bool:
    """Heartbeat: move the lease's expiry to now + ttl if it has not expired and its
    job is running. False means the lease is lost: stop working on the job."""
    with write_transaction(session):
        running = select(Job.id).where(Job.id == job_id, Job.status == JobStatus.running)
        if session.scalar(running.with_for_update(key_share=True)) is None:
            return False
        stmt = update(KvLease).where(KvLease.job_id == job_id, KvLease.expires_at > now)
        if lease_id is not None:
            stmt = stmt.where(KvLease.id == lease_id)
        values = {"expires_at": now + timedelta(seconds=ttl_s), "renewed_at": now}
        ok = rows_changed(session.execute(stmt.values(values), execution_options=NO_SYNC)) == 1
        if ok:
            beat = update(Job).where(Job.id == job_id).values(heartbeat_at=now)
            session.execute(beat, execution_options=NO_SYNC)
    return ok


def release(
    session: Session,
    job_id: uuid.UUID,
    now: datetime,
    status: JobStatus = JobStatus.succeeded,
    *,
    lease_id: uuid.UUID | None = None,
    error_reason: str | None = None,
    commit: bool = True,
    **values: Any,
) -> bool:
    """Delete the job's lease and set its status in the same transaction.

    `status` is final, or `waiting_for_capacity` to give the bytes back and queue
    again (the job keeps its `seq`, so its place). `values` are more job columns.
    A lease past its expiry that nobody has reaped yet may still be released: no
    one has counted its bytes as free. False: the caller no longer held the lease
    (or its job was not running), and the job was left alone."""
    if status not in (*FINAL, _WAITING):
        raise ValueError(f"cannot release a job into {status}")
    if error_reason is not None:
        values["error_reason"] = error_reason
    # In a transaction of its own it may be run again; in the caller's, the caller retries.
    run = retry_conflicts(_release) if commit else _release
    return run(session, job_id, now, status, lease_id, values, commit)


def _release(
    session: Session,
    job_id: uuid.UUID,
    now: datetime,
    status: JobStatus,
    lease_id: uuid.UUID | None,
    values: dict[str, Any],
    commit: bool,
) -> bool:
    final = status in FINAL
    with write_transaction(session, commit=commit):
        lock(session, [job_id])
        gone = delete(KvLease).where(KvLease.job_id == job_id)
        if lease_id is not None:
            gone = gone.where(KvLease.id == lease_id)
        if rows_changed(session.execute(gone, execution_options=NO_SYNC)) != 1:
            return False
        changes: dict[str, Any] = {"status": status, "heartbeat_at": None, **values}
        changes["finished_at" if final else "waiting_since"] = now
        done = update(Job).where(Job.id == job_id, Job.status == JobStatus.running)
        # A lease whose job is not running is garbage: deleting it is right anyway.
        return rows_changed(session.execute(done.values(changes), execution_options=NO_SYNC)) == 1


@retry_conflicts
def expire(
    session: Session, now: datetime, *, max_attempts: int = 3, tenant_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Delete every expired lease (and any whose job is not running); put their jobs
    back in the queue, or fail them after `max_attempts` expiries. Returns the jobs
    moved. `try_admit` reaps its own role too; this sweeps roles nobody admits on.
    With `tenant_id`, only the backends holding that tenant's dead leases are reaped
    (a test in a shared database reaps on its own backends)."""
    with write_transaction(session):
        dead = select(KvLease.backend_id).where(_dead(now))
        if tenant_id is not None:
            dead = dead.where(KvLease.job_id.in_(select(Job.id).where(Job.tenant_id == tenant_id)))
        ids = list(session.scalars(dead.distinct()))
        if not ids:
            return []
        backends = select(Backend.id).where(Backend.id.in_(ids)).order_by(Backend.id)
        session.execute(backends.with_for_update(key_share=True)).all()
        return _reap(session, ids, now, max_attempts)


def capacity(
    session: Session, now: datetime, *, role: str | None = None, backend_id: uuid.UUID | None = None
) -> list[Capacity]:
    """Total, leased and free KV bytes per backend, for the API and the CLI. Leases
    past their expiry count as free even before anyone reaps them."""
    stmt = select(Backend).order_by(Backend.role, Backend.url)
    if role is not None:
        stmt = stmt.where(Backend.role == role)
    if backend_id is not None:
        stmt = stmt.where(Backend.id == backend_id)
    backends = session.scalars(stmt).all()
    sums = select(KvLease.backend_id, func.sum(KvLease.kv_bytes), func.count()).where(
        KvLease.expires_at > now, KvLease.backend_id.in_([b.id for b in backends])
    )
    leased = {
        b: (int(n_bytes), n) for b, n_bytes, n in session.execute(sums.group_by(KvLease.backend_id))
    }
    out = []
    for b in backends:
        used, n = leased.get(b.id, (0, 0))
        total = b.kv_capacity_bytes
        free = None if total is None else total - used
        out.append(Capacity(b.id, b.role, b.url, b.healthy, total, used, free, n))
    return out


def _dead(now: datetime) -> ColumnElement[bool]:
    running = select(Job.id).where(Job.status == JobStatus.running)
    return or_(KvLease.expires_at <= now, KvLease.job_id.not_in(running))


def _reap(
    session: Session, backend_ids: Sequence[uuid.UUID], now: datetime, max_attempts: int
) -> list[uuid.UUID]:
    """Delete the dead leases on backends the caller has locked; requeue their jobs,
    or fail those admitted `max_attempts` times already (admission counts them)."""
    on_backends = KvLease.backend_id.in_(backend_ids)
    dead = session.scalars(select(KvLease.job_id).where(on_backends, _dead(now))).all()
    # Jobs before leases: a renewal that got its job first ends before we look again.
    locked = lock(session, dead)
    gone = delete(KvLease).where(on_backends, KvLease.job_id.in_(locked), _dead(now))
    job_ids = session.scalars(gone.returning(KvLease.job_id), execution_options=NO_SYNC).all()
    if not job_ids:
        return []
    was_running = (Job.id.in_(job_ids), Job.status == JobStatus.running)
    # Admission counts the attempts; a job that has had its last one fails here.
    reason = f"ran {max_attempts} times and its KV lease expired: its worker stopped renewing it"
    common = {"heartbeat_at": None}
    fail = update(Job).where(*was_running, Job.attempts >= max_attempts)
    fail = fail.values(status=JobStatus.failed, error_reason=reason, finished_at=now, **common)
    requeue = update(Job).where(*was_running)
    requeue = requeue.values(status=_WAITING, waiting_since=now, **common)
    return [
        *session.scalars(fail.returning(Job.id), execution_options=NO_SYNC),
        *session.scalars(requeue.returning(Job.id), execution_options=NO_SYNC),
    ]


def _candidates(
    session: Session, role: str, ready_after: datetime | None, max_scan: int, per_tenant: int
) -> Sequence[Any]:
    """The role's waiting jobs the policy sees: each tenant's first `per_tenant` in
    arrival order, ranked so that a full scan still holds every tenant's first."""
    # Table rows, not ORM objects: the caller's identity map must not keep a
    # stale copy of the jobs this transaction moves.
    rank = func.row_number().over(partition_by=Job.tenant_id, order_by=(Job.seq, Job.id))
    waiting = select(Job.__table__, rank.label("tenant_rank")).where(
        Job.role == role, Job.status == _WAITING, Job.kv_bytes.is_not(None)
    )
    if ready_after is not None:
        waiting = waiting.where(Job.heartbeat_at > ready_after)
    ranked = waiting.subquery()
    stmt = select(ranked).where(ranked.c.tenant_rank <= per_tenant)
    stmt = stmt.order_by(ranked.c.tenant_rank, ranked.c.seq, ranked.c.id).limit(max_scan)
    return session.execute(stmt).all()


def _last_served(session: Session, role: str, jobs: Sequence[Any]) -> dict[uuid.UUID, str]:
    """The replica that most recently ran each document: its prefix cache may hold it."""
    docs = {j.document_id for j in jobs if j.preferred_backend_id is None}
    if not docs:
        return {}
    rows = session.execute(
        select(Job.document_id, Job.backend_id)
        .where(Job.document_id.in_(docs), Job.role == role, Job.backend_id.is_not(None))
        .where(Job.admitted_at.is_not(None))
        .order_by(Job.admitted_at)
    )
    return {doc: str(backend) for doc, backend in rows if doc is not None}


def _waiting(job: Any, served: dict[uuid.UUID, str]) -> admission.WaitingJob:
    preferred = job.preferred_backend_id
    return admission.WaitingJob(
        id=str(job.id),
        seq=job.seq,
        kv_bytes=job.kv_bytes,
        waiting_since=(job.waiting_since or job.created_at).timestamp(),
        est_duration_s=math.inf if job.est_duration_s is None else job.est_duration_s,
        preferred_replica=str(preferred) if preferred else served.get(job.document_id),
        tenant=str(job.tenant_id),
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
    waited = max((now - (job.waiting_since or job.created_at)).total_seconds(), 0.0)
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
