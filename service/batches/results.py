"""A request's output line, `{id, custom_id, response: {status_code, request_id,
body}, error}`: the one shape of the results endpoint and of the output and error
files. `body` is the job's result as `/v1/jobs/{id}/result` gives it, for a chat
request OpenAI's `chat.completion`; `error` is `{code, message}` for failed, cancelled
and expired requests."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from ingestion.tasks.specs import CHAT_TASK
from service.errors import Conflict
from service.jobs.chat import completion
from service.jobs.results import result_out
from service.models import BatchItem, Job


def request_id(item: BatchItem) -> str:
    return f"batch_req_{item.id.hex}"


def _error(item: BatchItem, job: Job | None, state: str) -> dict[str, str]:
    code = (job.error_code if job is not None else None) or item.error_code or state
    reason = (job.error_reason if job is not None else None) or item.error_reason or state
    return {"code": code, "message": reason}


def line(session: Session, item: BatchItem, job: Job | None, state: str, admin: bool) -> str:
    """The item's line (`state` its effective status, final), newline-terminated."""
    return entry(session, item, job, state, admin)[0]


def entry(
    session: Session, item: BatchItem, job: Job | None, state: str, admin: bool
) -> tuple[str, bool]:
    """(the item's line, whether it is a success: an output file's, not an error file's)."""
    out: dict[str, Any] = {"id": request_id(item), "custom_id": item.custom_id}
    out["response"], out["error"] = None, _error(item, job, state)
    if state == "succeeded" and job is not None:
        try:
            result = result_out(session, job, admin=admin)
        except Conflict:
            out["error"] = {"code": "result_missing", "message": "the job's result is gone"}
        else:
            is_chat = job.task == CHAT_TASK
            body = completion(job, result) if is_chat else result.model_dump(mode="json")
            out["response"] = {"status_code": 200, "request_id": result.request_id, "body": body}
            out["error"] = None
    return json.dumps(out, separators=(",", ":")) + "\n", out["error"] is None
