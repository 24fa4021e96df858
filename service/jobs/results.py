"""A job's result as every face shows it: `/v1/jobs/{id}/result`, and each succeeded
line of a batch's results and output file."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import Conflict
from service.models import Job, JobStatus, Result


class ResultOut(BaseModel):
    job_id: uuid.UUID
    text: str | None
    data: dict[str, Any] | None
    warnings: list[str]
    model: str | None
    backend_url: str | None = Field(description="Shown to admin keys only; null for tenants.")
    request_id: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    created_at: datetime


def result_out(session: Session, job: Job, *, admin: bool = False) -> ResultOut:
    result = session.scalar(select(Result).where(Result.job_id == job.id))
    if job.status != JobStatus.succeeded or result is None:
        extra: dict[str, Any] = {"status": job.status.value}
        if job.raw_output is not None:
            extra["raw_output"] = job.raw_output
        raise Conflict(
            "not_ready" if job.status not in ("failed", "cancelled") else job.status.value,
            job.error_reason or f"the job is {job.status.value}",
            **extra,
        )
    return ResultOut(
        job_id=job.id,
        text=result.text,
        data=result.data,
        warnings=list(result.warnings or []),
        model=result.model,
        backend_url=result.backend_url if admin else None,
        request_id=result.request_id,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        created_at=result.created_at,
    )
