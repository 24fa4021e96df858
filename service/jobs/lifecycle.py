"""Job logic behind the router: create (validated, planned, idempotent), cancel, look up."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingestion.route_plan import RouteRefused
from ingestion.tasks import TaskError, validate
from service.auth import owned
from service.config import Settings
from service.db import write_transaction
from service.documents import get_owned as get_owned_document
from service.jobs import tree
from service.jobs.planning import SplitDeferred, est_duration_s, plan_document_job
from service.jobs.schemas import JobCreate
from service.models import Document, DocumentStatus, Job, JobStatus, utcnow

log = logging.getLogger(__name__)
_422 = status.HTTP_422_UNPROCESSABLE_CONTENT


def _key(doc_id: uuid.UUID, task: str, params: dict[str, Any], max_out: int) -> str:
    # Same document + task + params + budget, no key given: the same job.
    body = json.dumps([str(doc_id), task, params, max_out], sort_keys=True, separators=(",", ":"))
    return "auto:" + hashlib.sha256(body.encode()).hexdigest()


def _same_request(job: Job, doc_id: uuid.UUID, task: str, params: Any, max_out: int) -> bool:
    return (job.document_id, job.task, job.params, job.max_output_tokens) == (
        doc_id,
        task,
        params,
        max_out,
    )


def validated(body: JobCreate, settings: Settings) -> dict[str, Any]:
    try:
        params = validate(body.task, body.params)
    except TaskError as err:
        raise HTTPException(
            _422, detail={"code": "bad_params", "field": err.field, "reason": err.reason}
        ) from None
    if body.max_output_tokens > settings.max_output_tokens:
        raise HTTPException(
            _422,
            detail={
                "code": "bad_budget",
                "reason": f"max_output_tokens "
                f"{body.max_output_tokens:,} is above this service's limit of "
                f"{settings.max_output_tokens:,}",
            },
        )
    return params


def plan_and_start(
    session: Session,
    settings: Settings,
    job: Job,
    doc: Document,
    now: datetime,
    *,
    max_split_bytes: int | None = None,
    defer_tokenize_errors: bool = False,
) -> list[uuid.UUID]:
    """Plan a queued job on its parsed document and start it; a job that cannot run
    fails with the router's reason. ValueError (bad budget) and SplitDeferred
    propagate. Returns the jobs whose tasks to send."""
    try:
        planned = plan_document_job(
            session,
            settings,
            doc,
            job.task,
            job.params,
            job.max_output_tokens,
            max_split_bytes=max_split_bytes,
            defer_tokenize_errors=defer_tokenize_errors,
        )
    except RouteRefused as exc:
        rejected = "; ".join(r.reason for r in exc.rejected)
        reason = exc.reason + (f" (rejected: {rejected})" if rejected else "")
        tree.end_tree(session, [job.id], JobStatus.failed, now, code=exc.code, reason=reason)
        return []
    ests = {i: est_duration_s(r, settings) for i, r in enumerate(planned.plan.requests())}
    return tree.start(session, job, planned.plan, now, ests)


def create(
    session: Session, settings: Settings, tenant_id: uuid.UUID, body: JobCreate
) -> tuple[Job, bool, list[uuid.UUID]]:
    """(job, created, jobs whose tasks to send). Raises HTTPException for bad input."""
    params = validated(body, settings)
    doc = get_owned_document(session, tenant_id, body.document_id)
    key = body.idempotency_key or _key(doc.id, body.task, params, body.max_output_tokens)
    existing = _by_key(session, tenant_id, key)
    if existing is not None:
        return _existing(existing, doc.id, body, params), False, []
    if doc.status == DocumentStatus.failed:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail={
                "code": "document_failed",
                "reason": f"the document failed to parse: {doc.error_code}: {doc.error_reason}",
            },
        )
    now = utcnow()
    job = Job(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        document_id=doc.id,
        task=body.task,
        params=params,
        max_output_tokens=body.max_output_tokens,
        idempotency_key=key,
        status=JobStatus.queued,
        created_at=now,
    )
    session.add(job)
    send = [job.id]
    if doc.status == DocumentStatus.parsed:
        try:
            limit = settings.api_split_max_text_bytes
            send = plan_and_start(
                session, settings, job, doc, now, max_split_bytes=limit, defer_tokenize_errors=True
            )
        except SplitDeferred as exc:
            # Stays queued, plan null: its task plans it in the worker (which tries a
            # failing /tokenize again, a bounded number of times, then fails the job).
            log.info("job %s: planned by the worker (%s)", job.id, exc)
        except ValueError as exc:
            session.rollback()
            raise HTTPException(_422, detail={"code": "bad_budget", "reason": str(exc)}) from None
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # a concurrent request with the same key won
        winner = _by_key(session, tenant_id, key)
        if winner is None:
            raise
        return _existing(winner, doc.id, body, params), False, []
    return job, True, send


def _by_key(session: Session, tenant_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def _existing(job: Job, doc_id: uuid.UUID, body: JobCreate, params: dict[str, Any]) -> Job:
    if not _same_request(job, doc_id, body.task, params, body.max_output_tokens):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail={
                "code": "idempotency_key_reused",
                "reason": f"this idempotency key was used for a different request (job {job.id})",
            },
        )
    return job


def get_owned(session: Session, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    return owned(session, Job, tenant_id, job_id)


def list_owned(
    session: Session, tenant_id: uuid.UUID, limit: int, offset: int, state: JobStatus | None
) -> tuple[list[Job], int]:
    where = [Job.tenant_id == tenant_id, Job.parent_id.is_(None)]
    if state is not None:
        where.append(Job.status == state)
    total = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    rows = session.scalars(
        select(Job)
        .where(*where)
        .order_by(Job.created_at.desc(), Job.id)
        .limit(limit)
        .offset(offset)
    )
    return list(rows), total


def cancel(session: Session, job: Job) -> list[uuid.UUID]:
    """Cancel the job and its requests: status cancelled and leases released in one
    transaction. The worker running it sees its lease gone at its next heartbeat and
    aborts the vLLM request. Returns the jobs cancelled (empty: it was final)."""
    with write_transaction(session):
        moved = tree.end_tree(
            session,
            [job.id],
            JobStatus.cancelled,
            utcnow(),
            code="cancelled",
            reason="cancelled by the client",
        )
    session.refresh(job)
    return moved
