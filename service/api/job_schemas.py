"""Response bodies of /v1/jobs, apart from the logic that fills them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.jobs.results import ResultOut as ResultOut
from service.models import JobStatus


class JobError(BaseModel):
    code: str
    reason: str
    raw_output: str | None = Field(
        default=None, description="The model's last output, when it was unusable."
    )


class JobBackend(BaseModel):
    id: uuid.UUID
    role: str
    url: str | None = Field(description="Shown to admin keys only; null for tenants.")
    model: str | None


class JobTimings(BaseModel):
    created_at: datetime
    admitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    queued_s: float | None = Field(description="From creation until it first started running.")
    kv_wait_s: float | None = Field(description="Time spent waiting for KV-cache room.")
    prefill_s: float | None = Field(description="Time to the first output token.")
    total_s: float | None = Field(description="From creation to the end (or until now).")


class JobChildren(BaseModel):
    """The requests of a map-reduce job, each a job of its own."""

    total: int
    succeeded: int
    running: int
    failed: int


class WebhookOut(BaseModel):
    """One delivery of an event about this job (or batch): how its attempts went."""

    id: str = Field(description="The webhook-id header, the same on every attempt")
    event: str
    url: str
    status: str = Field(description="pending, succeeded, failed or disabled")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class JobOut(BaseModel):
    id: uuid.UUID
    document_id: uuid.UUID | None = Field(description="Null once the document is deleted.")
    task: str
    params: dict[str, Any]
    max_output_tokens: int
    pages: str | None = Field(
        default=None, description='The pages it works on ("7", "30-45"); null: all of them.'
    )
    idempotency_key: str
    status: JobStatus
    attempts: int
    plan: dict[str, Any] | None = Field(description="The routing plan; null until planned.")
    progress: dict[str, Any] | None
    backend: JobBackend | None
    error: JobError | None
    timings: JobTimings
    children: JobChildren | None
    result_url: str | None
    callback_url: str | None = None
    webhooks: list[WebhookOut] = Field(
        default_factory=list, description="Deliveries of the job's final event, once it ended"
    )


class JobList(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int
