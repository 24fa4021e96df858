"""Jobs and results as the API shows them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.job_schemas import (
    JobBackend,
    JobChildren,
    JobError,
    JobOut,
    JobTimings,
    WebhookOut,
)
from service.jobs.results import result_out as result_out
from service.models import FINAL, Backend, Job, JobStatus, WebhookDelivery, utcnow
from service.webhooks import outbox


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else max((end - start).total_seconds(), 0.0)


def _children(session: Session, job: Job) -> JobChildren | None:
    if job.plan is None or job.plan.kind != "map_reduce":
        return None
    counts = dict(
        session.execute(
            select(Job.status, func.count()).where(Job.parent_id == job.id).group_by(Job.status)
        ).all()
    )
    total_planned = len(job.plan.map) + sum(len(lv.groups) for lv in job.plan.reduce)
    return JobChildren(
        total=total_planned,
        succeeded=counts.get(JobStatus.succeeded, 0),
        running=counts.get(JobStatus.running, 0),
        failed=counts.get(JobStatus.failed, 0),
    )


def to_out(session: Session, job: Job, *, admin: bool = False) -> JobOut:
    """`admin`: the viewer's key is an operator's, who may see backend URLs; a tenant
    sees which role and model ran the job, not where the server is."""
    now = utcnow()
    backend = session.get(Backend, job.backend_id) if job.backend_id else None
    final = job.status in FINAL
    error = None
    # A waiting job shows why its last attempt ended; a succeeded one shows no error.
    if job.status != JobStatus.succeeded and (job.error_reason or job.status == JobStatus.failed):
        error = JobError(
            code=job.error_code or "failed",
            reason=job.error_reason or "failed",
            raw_output=job.raw_output,
        )
    return JobOut(
        id=job.id,
        document_id=job.document_id,
        task=job.task,
        params=job.params,
        max_output_tokens=job.max_output_tokens,
        pages=job.pages,
        idempotency_key=job.idempotency_key,
        status=job.status,
        attempts=job.attempts,
        plan=None if job.plan is None else job.plan.to_json(),
        progress=job.progress,
        backend=None
        if backend is None
        else JobBackend(
            id=backend.id,
            role=backend.role,
            url=backend.url if admin else None,
            model=backend.model,
        ),
        error=error,
        timings=JobTimings(
            created_at=job.created_at,
            admitted_at=job.admitted_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            queued_s=_seconds(job.created_at, job.started_at),
            kv_wait_s=job.kv_wait_s,
            prefill_s=job.prefill_s,
            total_s=_seconds(job.created_at, job.finished_at if final else now),
        ),
        children=_children(session, job),
        result_url=f"/v1/jobs/{job.id}/result" if job.status == JobStatus.succeeded else None,
        callback_url=job.webhook_url,
        webhooks=webhooks_out(outbox.deliveries(session, job_id=job.id)) if final else [],
    )


def webhooks_out(rows: list[WebhookDelivery]) -> list[WebhookOut]:
    return [
        WebhookOut(
            id=d.id,
            event=d.event_type,
            url=d.url,
            status=d.status.value,
            attempts=d.attempts,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at,
            delivered_at=d.delivered_at,
        )
        for d in rows
    ]
