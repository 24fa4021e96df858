"""A running job's lease: renewed by its worker's heartbeat, released with its final
status (or back to waiting), and the ledger's per-backend view of leased bytes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.db import NO_SYNC, retry_conflicts, rows_changed, write_transaction
from service.jobs.tree import lock
from service.models import FINAL, Backend, Job, JobStatus, KvLease
from service.webhooks import outbox

_WAITING = JobStatus.waiting_for_capacity


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
        moved = rows_changed(session.execute(done.values(changes), execution_options=NO_SYNC)) == 1
        if moved and final:
            outbox.jobs_ended(session, [job_id], now)
        return moved


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
    return capacity_of(session, session.scalars(stmt).all(), now)


def capacity_of(session: Session, backends: Sequence[Backend], now: datetime) -> list[Capacity]:
    """`capacity` of these backend rows, in their order (a caller that has the rows
    already reads only the leases)."""
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
