"""A request for a job, as every face takes it (the API's body, the upload's query)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: uuid.UUID
    task: str = Field(description="summarize, extract, ask, classify or prompt")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description='extract: {"schema": {...}}; ask: {"questions": [...]}; classify: '
        '{"labels": [...]}; prompt: {"instruction": "..."}; summarize: {} or {"focus": "..."}',
    )
    max_output_tokens: int = Field(default=1024, gt=0, description="Output budget per request.")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="http(s) URL that gets a signed job.succeeded, job.failed or "
        "job.cancelled event when the job ends (Standard Webhooks; signed with the secret "
        "of the tenant's first webhook endpoint, which must exist)",
    )
