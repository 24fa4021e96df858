"""Message batches as Anthropic's SDK reads them: the `message_batch` object (RFC 3339
times, `processing_status`, `request_counts`) and the results' lines `{custom_id,
result: {type: succeeded | errored | canceled | expired, ...}}`.

One difference, on purpose: Anthropic keeps every request `processing` until the whole
batch ends; here the counts move as requests finish, and the results route answers at
any time with what is final so far (`results_url` still appears only once the batch
has ended, so that a client waiting for it waits as it would with Anthropic).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.batches import lifecycle as batches
from service.models import BATCH_FINAL, Batch, BatchItem, BatchStatus, Job, Result

PAGE = 200


class MessageBatchRequestCounts(BaseModel):
    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatch(BaseModel):
    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: MessageBatchRequestCounts
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    cancel_initiated_at: datetime | None
    archived_at: datetime | None = None
    results_url: str | None
    callback_url: str | None = None  # Longdoc's: where the batch's final event goes


class MessageBatchList(BaseModel):
    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None


class DeletedMessageBatch(BaseModel):
    id: str
    type: Literal["message_batch_deleted"] = "message_batch_deleted"


def _processing_status(status: BatchStatus) -> Literal["in_progress", "canceling", "ended"]:
    if status in BATCH_FINAL:
        return "ended"
    return "canceling" if status == BatchStatus.cancelling else "in_progress"


def _ended_at(batch: Batch) -> datetime | None:
    stamps = (batch.completed_at, batch.failed_at, batch.expired_at, batch.cancelled_at)
    return next((at for at in stamps if at is not None), None)


def to_message_batch(session: Session, batch: Batch, base_url: str) -> MessageBatch:
    found = batches.counts(session, batch)
    public = batches.public_id(batch.id)
    state = _processing_status(batch.status)
    results = f"{base_url.rstrip('/')}/v1/messages/batches/{public}/results"
    return MessageBatch(
        id=public,
        processing_status=state,
        request_counts=MessageBatchRequestCounts(
            processing=found.unfinished,
            succeeded=found.completed,
            errored=found.failed,
            canceled=found.cancelled,
            expired=found.expired,
        ),
        created_at=batch.created_at,
        expires_at=batch.expires_at or batch.created_at,
        ended_at=_ended_at(batch) if state == "ended" else None,
        cancel_initiated_at=batch.cancelling_at,
        results_url=results if state == "ended" else None,
        callback_url=batch.callback_url,
    )


def _stop_reason(result: Result) -> str:
    """Anthropic's name for how the output ended: vLLM's `stop` (the model ended, or a
    stop sequence) is `end_turn`; anything else (`length`, a loop cut short) is
    `max_tokens`, as `chat.completion` calls it `length`."""
    return "end_turn" if (result.data or {}).get("finish_reason") == "stop" else "max_tokens"


def _succeeded(result: Result, job: Job) -> dict[str, Any]:
    return {
        "type": "succeeded",
        "message": {
            "id": f"msg_{job.id.hex}",
            "type": "message",
            "role": "assistant",
            "model": result.model or "",
            "content": [{"type": "text", "text": result.text or ""}],
            "stop_reason": _stop_reason(result),
            "stop_sequence": None,
            "usage": {
                "input_tokens": result.prompt_tokens or 0,
                "output_tokens": result.completion_tokens or 0,
            },
        },
    }


def _errored(item: BatchItem, job: Job | None) -> dict[str, Any]:
    code = (job.error_code if job is not None else None) or item.error_code or "failed"
    reason = (job.error_reason if job is not None else None) or item.error_reason or code
    # Anthropic's two kinds: the request was refused as it stood, or serving it failed.
    refused = job is None or code.startswith(("invalid", "too_long", "unknown"))
    kind = "invalid_request_error" if refused else "api_error"
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": f"{code}: {reason}"}},
    }


def result_line(item: BatchItem, job: Job | None, state: str, found: Result | None) -> str:
    """The item's line (`state` its effective status, final; `found` its job's result)."""
    result: dict[str, Any]
    if state == "succeeded" and found is not None and job is not None:
        result = _succeeded(found, job)
    elif state == "succeeded":
        result = _errored(item, job)
        result["error"]["error"]["message"] = "the request's result is gone"
    elif state in ("cancelled", "expired"):
        result = {"type": "canceled" if state == "cancelled" else "expired"}
    else:
        result = _errored(item, job)
    line = {"custom_id": item.custom_id, "result": result}
    return json.dumps(line, separators=(",", ":")) + "\n"


def result_lines(batch: Batch) -> Iterator[str]:
    """The lines of what is final now, in request order."""
    for session, page in batches.final_pages(batch.id, PAGE):
        done = [job.id for _, job, state in page if job is not None and state == "succeeded"]
        found = {
            r.job_id: r for r in session.scalars(select(Result).where(Result.job_id.in_(done)))
        }
        for item, job, state in page:
            yield result_line(item, job, state, found.get(job.id) if job else None)
