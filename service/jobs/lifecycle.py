"""Job logic behind the router: create (validated, planned, idempotent), cancel, look up."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingestion.capacity.route_plan import RouteRefused
from ingestion.documents.page_range import PageRange, PageRangeError, parse_pages
from ingestion.tasks.specs import TaskError, validate
from service.config import Settings
from service.db import NO_SYNC, retry_conflicts, rows_changed, write_transaction
from service.documents import get_owned as get_owned_document
from service.errors import Conflict, Invalid, QuotaExceeded
from service.jobs import quota, tree
from service.jobs.planner import SplitDeferred, est_duration_s
from service.jobs.planning import plan_document_job
from service.jobs.schemas import JobCreate
from service.models import Document, DocumentStatus, Job, JobStatus, utcnow
from service.tenancy import owned
from service.webhooks import outbox
from service.webhooks.destinations import check_destination

log = logging.getLogger(__name__)
# Without a client key, asking again for what failed or was cancelled is a retry.
_RETRIED = (JobStatus.failed, JobStatus.cancelled)


def _key(
    doc_id: uuid.UUID, task: str, params: dict[str, Any], max_out: int, pages: str | None
) -> str:
    # Same document + task + params + budget + pages, no key given: the same job. A job
    # on the whole document keys as it did before pages existed, so a retry of one
    # made then still finds it.
    fields: list[Any] = [str(doc_id), task, params, max_out]
    if pages is not None:
        fields.append({"pages": pages})
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return "auto:" + hashlib.sha256(body.encode()).hexdigest()


def _same_request(job: Job, doc_id: uuid.UUID, body: JobCreate, params: Any) -> bool:
    return (job.document_id, job.task, job.params, job.max_output_tokens, job.pages) == (
        doc_id,
        body.task,
        params,
        body.max_output_tokens,
        body.pages,
    )


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


def _check_callback(session: Session, settings: Settings, tenant_id: uuid.UUID, url: str) -> None:
    """A callback URL that may be delivered to, and a secret to sign it with."""
    check_destination(url, allow_private=settings.webhook_private_allowed)
    if not outbox.endpoints(session, tenant_id):
        raise Invalid(
            "no_webhook_secret",
            "a callback is signed with the secret of a webhook endpoint: register one first "
            "(POST /v1/webhooks/endpoints)",
            field="callback_url",
        )


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
    try:
        planned = plan_document_job(
            session,
            settings,
            doc,
            job.task,
            job.params,
            job.max_output_tokens,
            pages=job_pages(job),
            max_split_bytes=max_split_bytes,
            defer_tokenize_errors=defer_tokenize_errors,
        )
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


def create(  # noqa: C901 - one path per outcome of a creation
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
        _check_callback(session, settings, tenant_id, body.callback_url)
    doc = get_owned_document(session, tenant_id, body.document_id)
    key = body.idempotency_key or _key(
        doc.id, body.task, params, body.max_output_tokens, body.pages
    )
    existing = _reusable(session, tenant_id, key, automatic=body.idempotency_key is None)
    if existing is not None:
        return _existing(existing, doc.id, body, params), False, []
    if doc.status == DocumentStatus.failed:
        raise Conflict(
            "document_failed",
            f"the document failed to parse: {doc.error_code}: {doc.error_reason}",
        )
    _check_pages(doc, body.pages)
    if batch_id is None:
        quota.check_room(session, settings, tenant_id)  # cheap refusal before planning
    now = utcnow()
    job = Job(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        document_id=doc.id,
        task=body.task,
        params=params,
        max_output_tokens=body.max_output_tokens,
        pages=body.pages,
        idempotency_key=key,
        status=JobStatus.queued,
        created_at=now,
        batch_id=batch_id,
        webhook_url=body.callback_url,
    )
    session.add(job)
    try:
        # Now, not at whichever query autoflushes first: a lost race on the key, or the
        # document deleted meanwhile, surfaces here or at the commit, and nowhere else.
        session.flush()
    except IntegrityError:
        return _lost_race(session, tenant_id, key, body.document_id, body, params)
    send = [job.id]
    if doc.status == DocumentStatus.parsed:
        try:
            limit = settings.api_split_max_text_bytes
            started = plan_and_start(
                session, settings, job, doc, now, max_split_bytes=limit, defer_tokenize_errors=True
            )
            assert started is not None, "a job of this transaction is nobody else's"
            send = started
        except SplitDeferred as exc:
            # Stays queued, plan null: its task plans it in the worker (which tries a
            # failing /tokenize again, a bounded number of times, then fails the job).
            log.info("job %s: planned by the worker (%s)", job.id, exc)
        except ValueError as exc:
            session.rollback()
            raise Invalid("bad_budget", str(exc), field="max_output_tokens") from None
    try:
        if batch_id is None:
            quota.check_room(session, settings, tenant_id, new_job=job.id)  # locked: exact
    except QuotaExceeded:
        session.rollback()
        raise
    try:
        session.commit()
    except IntegrityError:
        return _lost_race(session, tenant_id, key, body.document_id, body, params)
    # The answer is the job as stored: the router may have failed it (`end_tree`
    # writes past the ORM).
    session.refresh(job)
    return job, True, send


def _lost_race(
    session: Session,
    tenant_id: uuid.UUID,
    key: str,
    doc_id: uuid.UUID,
    body: JobCreate,
    params: dict[str, Any],
) -> tuple[Job, bool, list[uuid.UUID]]:
    """The insert broke a constraint: a concurrent request with the same key won (its
    job answers), or the document was deleted meanwhile (404)."""
    session.rollback()
    winner = _by_key(session, tenant_id, key)
    if winner is None:
        get_owned_document(session, tenant_id, doc_id)  # 404 if deleted meanwhile
        raise Conflict("conflict", "the request conflicted; retry it")
    return _existing(winner, doc_id, body, params), False, []


def _reusable(session: Session, tenant_id: uuid.UUID, key: str, *, automatic: bool) -> Job | None:
    """The job that answers this request, or None: create one. A client's own key
    always names its job, whatever became of it (a retry with the same key is the
    same request); an automatic key reuses only a job that is live or succeeded. A
    failed or cancelled job gives its automatic key up (renamed after itself) in the
    transaction that creates its successor; a concurrent retry waits on that rename
    and is answered with the successor."""
    existing = _by_key(session, tenant_id, key)
    if existing is None or not automatic or existing.status not in _RETRIED:
        return existing
    free = update(Job).where(Job.id == existing.id, Job.idempotency_key == key)
    free = free.values(idempotency_key=f"{key}@{existing.id}")
    if rows_changed(session.execute(free, execution_options=NO_SYNC)):
        return None
    return _by_key(session, tenant_id, key)  # the other retry's job, committed


def _by_key(session: Session, tenant_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def _existing(job: Job, doc_id: uuid.UUID, body: JobCreate, params: dict[str, Any]) -> Job:
    if not _same_request(job, doc_id, body, params):
        raise Conflict(
            "idempotency_key_reused",
            f"this idempotency key was used for a different request (job {job.id})",
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
