"""Batches as the API shows them: OpenAI's batch object (`object: "batch"`, unix
timestamps, `request_counts`) with Longdoc's own fields beside it (`kind`, `task`),
and the results' output lines `{id, custom_id, response, error}`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.orm import Session

from service.api import job_views
from service.api.document_views import ocr_out
from service.api.file_views import file_id
from service.api.job_schemas import WebhookOut
from service.api.schemas import OcrChoiceOut
from service.batches import archives, result_cursor, results
from service.batches import lifecycle as batches
from service.batches.status import Counts
from service.models import Batch
from service.webhooks import outbox

# The results' paging headers (routers/batches.py `batch_results`).
NEXT_CURSOR = "Longdoc-Next-Cursor"
MORE = "Longdoc-More"


class RequestCounts(BaseModel):
    total: int
    completed: int = Field(description="Requests that succeeded.")
    failed: int
    cancelled: int = Field(description="Longdoc's: ended by a cancel (neither of the two).")
    expired: int = Field(description="Longdoc's: not run before the batch expired.")


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(description="{code, message, line}")


class BatchOut(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str | None
    errors: BatchErrors | None
    input_file_id: str | None
    completion_window: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, Any] | None
    kind: str = Field(description="archive, openai or anthropic")
    task: str | None
    params: dict[str, Any] | None
    max_output_tokens: int | None
    filename: str | None
    ocr: OcrChoiceOut | None = Field(
        default=None, description="Longdoc's: an archive batch's OCR choice, its documents'"
    )
    callback_url: str | None = None
    webhooks: list[WebhookOut] = Field(
        default_factory=list, description="Longdoc's: deliveries of the batch's final event"
    )


class BatchCreate(BaseModel):
    """OpenAI's batch request, as its SDKs send it (`client.batches.create`)."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=100, description="A purpose=batch file's id.")
    endpoint: str = Field(
        max_length=100,
        description="What every line calls: `/v1/jobs` or `/v1/chat/completions`; others "
        "fail the batch.",
    )
    completion_window: str = Field(default="24h", max_length=8, description="1h to 168h.")
    metadata: (
        dict[
            Annotated[str, StringConstraints(max_length=64)],
            Annotated[str, StringConstraints(max_length=512)],
        ]
        | None
    ) = Field(default=None, max_length=16, description="Up to 16 string pairs (OpenAI's limits).")
    output_expires_after: dict[str, Any] | None = Field(
        default=None, description="Accepted for the SDKs; Longdoc's output files do not expire."
    )
    callback_url: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="Longdoc's (the SDKs send it in `extra_body`): an http(s) URL that gets "
        "the signed batch.completed, batch.failed, batch.expired or batch.cancelled event, "
        "signed with the secret of the tenant's first webhook endpoint, which must exist",
    )


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchOut]
    first_id: str | None
    last_id: str | None
    has_more: bool


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def _file(row_id: uuid.UUID | None) -> str | None:
    return None if row_id is None else file_id(row_id)


def to_out(session: Session, batch: Batch) -> BatchOut:
    found: Counts = batches.counts(session, batch)
    return BatchOut(
        id=batches.public_id(batch.id),
        endpoint=batch.endpoint,
        errors=BatchErrors(data=batch.errors) if batch.errors else None,
        input_file_id=_file(batch.input_file_id),
        output_file_id=_file(batch.output_file_id),
        error_file_id=_file(batch.error_file_id),
        completion_window=batch.completion_window,
        status=batch.status.value,
        created_at=int(batch.created_at.timestamp()),
        in_progress_at=_unix(batch.in_progress_at),
        expires_at=_unix(batch.expires_at),
        finalizing_at=_unix(batch.finalizing_at),
        completed_at=_unix(batch.completed_at),
        failed_at=_unix(batch.failed_at),
        expired_at=_unix(batch.expired_at),
        cancelling_at=_unix(batch.cancelling_at),
        cancelled_at=_unix(batch.cancelled_at),
        request_counts=RequestCounts(
            total=found.total,
            completed=found.completed,
            failed=found.failed,
            cancelled=found.cancelled,
            expired=found.expired,
        ),
        metadata=batch.meta,
        kind=batch.kind,
        task=batch.task,
        params=batch.params,
        max_output_tokens=batch.max_output_tokens,
        filename=batch.filename,
        ocr=ocr_out(batch.ocr_mode, batch.ocr_languages) if batch.kind == archives.KIND else None,
        callback_url=batch.callback_url,
        webhooks=job_views.webhooks_out(outbox.deliveries(session, batch_id=batch.id)),
    )


def result_lines(batch: Batch, admin: bool, lines: Sequence[int]) -> Iterator[str]:
    """The output lines of the items at `lines` (a page `result_cursor.scan` found
    final), in line order."""
    for session, page in result_cursor.items_at(batch.id, lines):
        for item, job, state in page:
            yield results.line(session, item, job, state, admin)
