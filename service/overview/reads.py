"""What the service is doing now, as one viewer may see it: the status page's data.

An operator (admin key) sees every tenant's work and the backends' URLs and errors;
a tenant sees only their own jobs, batches and failures, the backends by role and
model, and of each KV pool the share their own leases hold. Everything is read from
the database in one short transaction; the broker's queues are read by the caller
(`service.metrics.broker.queue_counts`), never while a connection is held.

Each list is bounded (`RECENT`), so the page costs the same however much work the
tables hold.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.backends.discovery import NOT_CONFIGURED, state, usable
from service.ledger.leases import capacity_of
from service.models import (
    Backend,
    Batch,
    Document,
    DocumentStatus,
    Job,
    JobStatus,
    KvLease,
)
from service.overview.views import (
    BackendView,
    BatchView,
    FailureView,
    JobView,
    Overview,
    QueueView,
)
from service.tenancy import Principal

RECENT = 15
_REASON_CHARS = 300
_QUEUED = (JobStatus.queued, JobStatus.waiting_for_capacity, JobStatus.running)


def _mine(column: InstrumentedAttribute[uuid.UUID], who: Principal) -> ColumnElement[bool]:
    """The viewer's rows: every row for an operator."""
    return true() if who.is_admin else column == who.tenant_id


def backends(session: Session, who: Principal, now: datetime) -> tuple[list[BackendView], int]:
    """The configured backends, and how many rows are of servers no longer configured
    (kept for the jobs that point at them, not shown)."""
    own: dict[uuid.UUID, tuple[int, int]] = {}
    if not who.is_admin:
        stmt = (
            select(KvLease.backend_id, func.sum(KvLease.kv_bytes), func.count())
            .join(Job, Job.id == KvLease.job_id)
            .where(KvLease.expires_at > now, Job.tenant_id == who.tenant_id)
            .group_by(KvLease.backend_id)
        )
        own = {b: (int(n_bytes), int(n)) for b, n_bytes, n in session.execute(stmt)}
    out, retired = [], 0
    rows = session.scalars(select(Backend).order_by(Backend.role, Backend.url)).all()
    for row, c in zip(rows, capacity_of(session, rows, now), strict=True):
        if not row.healthy and row.last_error == NOT_CONFIGURED:
            retired += 1
            continue
        leased, n = (c.leased_bytes, c.leases) if who.is_admin else own.get(row.id, (0, 0))
        out.append(
            BackendView(
                id=row.id,
                role=row.role,
                model=row.model,
                state=state(row.healthy, bool(row.mismatches), usable(row)),
                usable=usable(row),
                context_tokens=row.max_model_len,
                capacity_bytes=c.total_bytes,
                leased_bytes=leased,
                leases=n,
                url=row.url if who.is_admin else None,
                error=row.last_error if who.is_admin else None,
                mismatches=(row.mismatches or {}) if who.is_admin else {},
            )
        )
    return out, retired


def queues(session: Session, who: Principal, now: datetime) -> list[QueueView]:
    """Requests not final, per role and status; every configured role appears."""
    stmt = select(Job.role, Job.status, func.count(), func.min(Job.waiting_since))
    stmt = stmt.where(Job.status.in_(_QUEUED), _mine(Job.tenant_id, who))
    # A map-reduce job is counted by its requests, not itself: it is running while they
    # queue, and its own row is the one running without a role (before routing, a job
    # without a role is queued).
    stmt = stmt.where(or_(Job.role.is_not(None), Job.status != JobStatus.running))
    counts: dict[str, dict[str, Any]] = {}
    for role in session.scalars(select(Backend.role).distinct()):
        counts[role] = {}
    for routed, status, n, since in session.execute(stmt.group_by(Job.role, Job.status)):
        entry = counts.setdefault(routed or "routing", {})
        entry[str(status)] = int(n)
        if since is not None and status != JobStatus.running:
            wait = max((now - since).total_seconds(), 0.0)
            entry["oldest"] = max(entry.get("oldest", 0.0), wait)
    return [
        QueueView(
            role,
            queued=c.get(JobStatus.queued.value, 0),
            waiting_for_capacity=c.get(JobStatus.waiting_for_capacity.value, 0),
            running=c.get(JobStatus.running.value, 0),
            oldest_wait_s=c.get("oldest"),
        )
        for role, c in sorted(counts.items(), key=lambda kv: (kv[0] == "routing", kv[0]))
    ]


def _job_progress(job: Job, doc: Document | None) -> tuple[int, int | None, str]:
    p = job.progress or {}
    if "map_total" in p:
        done = int(p.get("map_done", 0)) + int(p.get("reduce_done", 0))
        return done, int(p["map_total"]) + int(p.get("reduce_total", 0)), "requests"
    if job.plan is None and doc is not None and doc.status != DocumentStatus.parsed:
        return doc.pages_done, doc.page_count, "pages parsed"
    return (1 if job.status == JobStatus.succeeded else 0), 1, "request"


def _first_role(job: Job) -> str | None:
    first = next(job.plan.requests(), None) if job.plan is not None else None
    return None if first is None else first.role


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= _REASON_CHARS:
        return text
    return text[: _REASON_CHARS - 1] + "…"


def recent_jobs(session: Session, who: Principal) -> list[JobView]:
    stmt = select(Job, Document).outerjoin(Document, Document.id == Job.document_id)
    stmt = stmt.where(Job.parent_id.is_(None), _mine(Job.tenant_id, who))
    out = []
    for job, doc in session.execute(stmt.order_by(Job.seq.desc()).limit(RECENT)):
        done, total, stage = _job_progress(job, doc)
        out.append(
            JobView(
                id=job.id,
                task=job.task,
                status=str(job.status),
                filename=doc.filename if doc is not None else None,
                role=job.role or _first_role(job),
                created_at=job.created_at,
                done=done,
                total=total,
                stage=stage,
                reason=_clip(job.error_reason) if job.status == JobStatus.failed else None,
            )
        )
    return out


def recent_batches(session: Session, who: Principal) -> list[BatchView]:
    stmt = select(Batch).where(_mine(Batch.tenant_id, who)).order_by(Batch.created_at.desc())
    return [
        BatchView(
            b.id, b.kind, str(b.status), b.filename, b.created_at, b.total, b.completed, b.failed
        )
        for b in session.scalars(stmt.limit(RECENT))
    ]


def recent_failures(session: Session, who: Principal) -> list[FailureView]:
    """Failed jobs (roots: a request's failure is its job's) and failed documents,
    newest first."""
    jobs = select(Job, Document.filename).outerjoin(Document, Document.id == Job.document_id)
    jobs = jobs.where(
        Job.status == JobStatus.failed, Job.parent_id.is_(None), _mine(Job.tenant_id, who)
    )
    docs = select(Document).where(
        Document.status == DocumentStatus.failed, _mine(Document.tenant_id, who)
    )
    out = [
        FailureView(
            "job",
            j.id,
            j.finished_at or j.created_at,
            j.error_code or "failed",
            _clip(j.error_reason) or "failed",
            name,
        )
        for j, name in session.execute(jobs.order_by(Job.seq.desc()).limit(RECENT))
    ]
    out += [
        FailureView(
            "document",
            d.id,
            d.updated_at,  # when it failed: the failing write sets it (parsed_at stays null)
            d.error_code or "failed",
            _clip(d.error_reason) or "failed",
            d.filename,
        )
        for d in session.scalars(docs.order_by(Document.updated_at.desc()).limit(RECENT))
    ]
    return sorted(out, key=lambda f: f.at, reverse=True)[:RECENT]


def overview(session: Session, who: Principal, now: datetime) -> Overview:
    shown, retired = backends(session, who, now)
    return Overview(
        admin=who.is_admin,
        now=now,
        backends=shown,
        retired_backends=retired,
        queues=queues(session, who, now),
        jobs=recent_jobs(session, who),
        batches=recent_batches(session, who),
        failures=recent_failures(session, who),
    )
