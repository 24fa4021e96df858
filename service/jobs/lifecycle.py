"""Job logic behind the router: create (validated, planned, idempotent), cancel, look up."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from ingestion.capacity.route_plan import RouteRefused
from ingestion.documents.page_range import PageRange, PageRangeError, parse_pages
from ingestion.tasks.specs import TaskError, validate
from service.config import Settings
from service.db import retry_conflicts, write_transaction
from service.documents import get_owned as get_owned_document
from service.errors import Conflict, Invalid
from service.jobs import creation, quota, tree
from service.jobs.planner import Planned, SplitDeferred
from service.jobs.planning import plan_document_job
from service.jobs.request_time import est_duration_s
from service.jobs.schemas import JobCreate
from service.models import Document, DocumentStatus, Job, JobStatus, utcnow
from service.tenancy import owned
from service.webhooks.endpoints import check_callback

log = logging.getLogger(__name__)


def job_pages(job: Job) -> PageRange | None:
    """The job's page range as stored (canonical, checked when it was created)."""
    return None if job.pages is None else parse_pages(job.pages)


def _check_pages(doc: Document, pages: str | None) -> None:
    """A range past the end of a parsed document is the client's mistake, answered now;
    on a document not parsed yet the planner fails the job when it is."""
    if pages is None or doc.status != DocumentStatus.parsed or doc.page_count is None:
        return
    try:
        parse_pages(pages).check_within(doc.page_count)
    except PageRangeError as exc:
        raise Invalid("pages_out_of_range", str(exc), field="pages") from None


def task_field(name: str) -> str:
    """A task error's field as a path in the job request: a parameter's name is under
    `params`."""
    return name if name in ("task", "params") else f"params.{name}"


def validated(body: JobCreate, settings: Settings) -> dict[str, Any]:
    try:
        params = validate(body.task, body.params)
    except TaskError as err:
        raise Invalid("bad_params", err.reason, field=task_field(err.field)) from None
    if body.max_output_tokens > settings.max_output_tokens:
        raise Invalid(
            "bad_budget",
            f"max_output_tokens {body.max_output_tokens:,} is above this service's limit of "
            f"{settings.max_output_tokens:,}",
            field="max_output_tokens",
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
) -> list[uuid.UUID] | None:
    """Plan a queued job on its parsed document and start it; a job that cannot run
    fails with the router's reason. ValueError (bad budget) and SplitDeferred
    propagate. Returns the jobs whose tasks to send; None when another planner (or a
    cancel) got to the job first, and nothing was written."""
    return start_planned(
        session,
        settings,
        job,
        now,
        lambda: plan_document_job(
            session,
            settings,
            doc,
            job.task,
            job.params,
            job.max_output_tokens,
            pages=job_pages(job),
            max_split_bytes=max_split_bytes,
            defer_tokenize_errors=defer_tokenize_errors,
        ),
    )


def start_planned(
    session: Session, settings: Settings, job: Job, now: datetime, plan: Callable[[], Planned]
) -> list[uuid.UUID] | None:
    """Start a queued job on what `plan` makes of it, or fail it with the router's
    reason; as `plan_and_start`, whose planning `plan` does."""
    try:
        planned = plan()
    except RouteRefused as exc:
        rejected = "; ".join(r.reason for r in exc.rejected)
        reason = exc.reason + (f" (rejected: {rejected})" if rejected else "")
        if not still_unplanned(session, job):
            return None
        tree.end_tree(session, [job.id], JobStatus.failed, now, code=exc.code, reason=reason)
        return []
    if not still_unplanned(session, job):
        return None
    ests = {i: est_duration_s(r, settings) for i, r in enumerate(planned.plan.requests())}
    return tree.start(session, job, planned.plan, now, ests)


def still_unplanned(session: Session, job: Job) -> bool:
    """Lock the job and check that it is still queued with no plan, so that of two
    tasks planning it (the sweeper sends a job again) only the first one's plan
    lands, and a cancel made while planning stands. Held until the caller commits."""
    if inspect(job).pending:
        return True  # inserted in this very transaction: nobody else can see it
    row = session.execute(
        select(Job.status, Job.plan).where(Job.id == job.id).with_for_update(key_share=True)
    ).one_or_none()
    return row is not None and row.status == JobStatus.queued and row.plan is None


def create_waiting(
    session: Session,
    settings: Settings,
    tenant_id: uuid.UUID,
    body: JobCreate,
    on: list[tuple[Document, str]],
    batch_id: uuid.UUID,
) -> list[Job]:
    """`body`'s job on each of a batch's documents not parsed yet, each under its own
    key (found free), as `create` makes one there: queued, planned once its document
    is. Added uncommitted, so a batch makes many in one transaction; the caller
    commits and sends them. Raises what `create` would for the body."""
    params = validated(body, settings)
    now = utcnow()
    made = []
    for doc, key in on:
        if doc.status != DocumentStatus.queued or doc.tenant_id != tenant_id:
            raise ValueError(f"document {doc.id} is not a new document of this tenant")
        asked = creation.Asked(doc.id, body.task, params, body.max_output_tokens, body.pages)
        made.append(creation.new_job(tenant_id, asked, key, now, batch_id))
    session.add_all(made)
    return made


def create(
    session: Session,
    settings: Settings,
    tenant_id: uuid.UUID,
    body: JobCreate,
    *,
    batch_id: uuid.UUID | None = None,
) -> tuple[Job, bool, list[uuid.UUID]]:
    """(job, created, jobs whose tasks to send). Raises Invalid for bad input,
    NotFound, Conflict, and QuotaExceeded when the tenant has its limit of jobs
    waiting (a repeated request still gets its existing job). A batch's job
    (`batch_id`) is bounded by its archive's limits, not by the interactive quota."""
    params = validated(body, settings)
    if body.callback_url is not None:
        check_callback(session, settings, tenant_id, body.callback_url, "callback_url")
    doc = get_owned_document(session, tenant_id, body.document_id)
    asked = creation.Asked(doc.id, body.task, params, body.max_output_tokens, body.pages)
    key, found = creation.existing(session, tenant_id, asked, body.idempotency_key)
    if found is not None:
        return found, False, []
    if doc.status == DocumentStatus.failed:
        raise Conflict(
            "document_failed",
            f"the document failed to parse: {doc.error_code}: {doc.error_reason}",
        )
    _check_pages(doc, body.pages)
    if batch_id is None:
        quota.check_room(session, settings, tenant_id)  # cheap refusal before planning
    now = utcnow()
    job = creation.new_job(tenant_id, asked, key, now, batch_id, webhook_url=body.callback_url)

    def start() -> list[uuid.UUID]:
        if doc.status != DocumentStatus.parsed:
            return [job.id]
        try:
            limit = settings.api_split_max_text_bytes
            started = plan_and_start(
                session, settings, job, doc, now, max_split_bytes=limit, defer_tokenize_errors=True
            )
        except SplitDeferred as exc:
            # Stays queued, plan null: its task plans it in the worker (which tries a
            # failing /tokenize again, a bounded number of times, then fails the job).
            log.info("job %s: planned by the worker (%s)", job.id, exc)
            return [job.id]
        except ValueError as exc:
            session.rollback()
            raise Invalid("bad_budget", str(exc), field="max_output_tokens") from None
        assert started is not None, "a job of this transaction is nobody else's"
        return started

    return creation.insert(session, settings, job, asked, start)


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


@retry_conflicts
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
