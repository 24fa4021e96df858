"""A request for a job, as every face takes it (the API's body, the upload's query)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from ingestion.documents.page_range import MAX_SPEC_CHARS, PageRangeError, parse_pages


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
    pages: str | None = Field(
        default=None,
        max_length=MAX_SPEC_CHARS,
        description='Only these pages of the document, 1-based and inclusive: "7" or '
        '"30-45". The job is counted, routed and run on their text alone, and cites '
        "their real page numbers.",
        examples=["30-45"],
    )
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="http(s) URL that gets a signed job.succeeded, job.failed or "
        "job.cancelled event when the job ends (Standard Webhooks; signed with the secret "
        "of the tenant's first webhook endpoint, which must exist)",
    )

    @field_validator("pages")
    @classmethod
    def _canonical_pages(cls, value: str | None) -> str | None:
        # Stored and compared canonical ("7-7" is "7"): the same pages are the same job.
        if value is None:
            return None
        try:
            return str(parse_pages(value))
        except PageRangeError as exc:
            raise PydanticCustomError("bad_pages", "{reason}", {"reason": str(exc)}) from None
