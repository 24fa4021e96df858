"""Request-file batches (OpenAI's Batch API): a tenant's uploaded JSONL file becomes a
batch (`create`, in the API), then the worker's expand task validates it whole and
makes an item and a job of each line (`expand`).

Validation is OpenAI's: a bad line (not JSON, a missing or repeated custom_id, another
method, a url other than the batch's endpoint, one line too many) fails the batch with
`errors.data[{code, message, line}]` and no job is made. A well-formed line whose body
names a document the tenant has not, or a bad task (for `/v1/jobs`), or bad messages or
a model not served (for `/v1/chat/completions`, `service.jobs.chat`), is that request's
own failed item; the others go on. The same file (its bytes) for the same endpoint
from one tenant is the same batch, unless that one ended badly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from service.batches import catalog, items
from service.batches import lifecycle as batches
from service.batches import request_lines as lines
from service.batches import status as rules
from service.blobstore import BlobStore
from service.config import Settings
from service.errors import DomainError, Invalid
from service.files import get_owned as get_owned_file
from service.jobs import chat
from service.jobs import lifecycle as jobs
from service.jobs.schemas import JobCreate
from service.models import (
    BATCH_FINAL,
    Batch,
    BatchItemStatus,
    BatchStatus,
    File,
    FilePurpose,
    Job,
    utcnow,
)
from service.webhooks.endpoints import check_callback

if TYPE_CHECKING:  # it imports this module, to hand a request file's batch over
    from service.batches.expansion import Expansion

log = logging.getLogger(__name__)
KIND = "openai"
# The endpoints a request file's lines may call; others fail the batch at validation.
JOBS, CHAT = "/v1/jobs", "/v1/chat/completions"
ENDPOINTS = (JOBS, CHAT)


@dataclass(frozen=True)
class BatchRequest:
    input_file_id: uuid.UUID
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None


def dedup_key(file_sha256: str, endpoint: str) -> str:
    text = json.dumps([KIND, file_sha256, endpoint], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def create(
    session: Session, settings: Settings, tenant_id: uuid.UUID, asked: BatchRequest
) -> tuple[Batch, bool]:
    """(batch, created). NotFound for a file the tenant has not; Invalid for a file
    that is not a request file or a bad window. An endpoint not served is a batch
    failed at once, as a bad line fails one at validation."""
    try:
        window = rules.window(asked.completion_window)
    except ValueError as exc:
        raise Invalid("bad_window", str(exc), field="body.completion_window") from None
    if asked.callback_url is not None:
        check_callback(session, settings, tenant_id, asked.callback_url, "body.callback_url")
    source = get_owned_file(session, tenant_id, asked.input_file_id)
    if source.purpose != FilePurpose.batch:
        raise Invalid(
            "bad_input_file",
            f"the file's purpose is {source.purpose.value}; a batch reads purpose=batch files",
            field="body.input_file_id",
        )
    now = utcnow()
    batch = Batch(
        tenant_id=tenant_id, kind=KIND, status=BatchStatus.validating,
        endpoint=asked.endpoint, filename=source.filename, input_file_id=source.id,
        completion_window=asked.completion_window, expires_at=now + window,
        meta=asked.metadata, total=0, created_at=now, callback_url=asked.callback_url,
    )  # fmt: skip
    if asked.endpoint not in ENDPOINTS:
        batch.status, batch.failed_at, batch.expanded_at = BatchStatus.failed, now, now
        message = f"endpoint {asked.endpoint!r} is not served; use one of {list(ENDPOINTS)}"
        batch.errors = [{"code": "invalid_endpoint", "message": message, "line": None}]
        session.add(batch)
        session.commit()
        return batch, True
    key = dedup_key(source.sha256, asked.endpoint)
    existing = batches.reusable(session, tenant_id, key)
    session.commit()
    if existing is not None:
        return existing, False
    batch.dedup_key = key
    return catalog.insert_once(session, batch)


def _create(
    run: Expansion, session: Session, batch: Batch, cid: str, body: dict[str, Any]
) -> tuple[Job, bool, list[uuid.UUID]]:
    """The line's job, made as its endpoint makes one. ValidationError for a body that
    is not that endpoint's request; what the job's creation raises."""
    key = items.job_key(batch.id, cid)
    if batch.endpoint == CHAT:
        asked = chat.ChatRequest.model_validate(body)
        return chat.create_chat(
            session, run.settings, batch.tenant_id, asked, batch_id=batch.id, idempotency_key=key
        )
    create = JobCreate.model_validate({**body, "idempotency_key": key})
    return jobs.create(session, run.settings, batch.tenant_id, create, batch_id=batch.id)


def _make(run: Expansion, session: Session, batch: Batch, req: lines.Request) -> None:
    """One line: its item and its job, or its item failed with the job's refusal."""
    cid, line = req.custom_id, req.line
    try:
        job, _, send = _create(run, session, batch, cid, req.body)
    except ValidationError as exc:
        session.rollback()
        first = exc.errors()[0]
        where = ".".join(["body", *(str(p) for p in first["loc"])])
        items.fail_item(session, batch, cid, line, "invalid_body", f"{where}: {first['msg']}")
        return
    except DomainError as err:
        session.rollback()
        items.fail_item(session, batch, cid, line, err.code, err.reason)
        return
    row = items.item(session, batch.id, cid, line)
    row.job_id, row.document_id, row.status = job.id, job.document_id, BatchItemStatus.queued
    if send:
        run.send_jobs(session, send)  # its commit is the item's too
    session.commit()  # (nothing left to commit, when it was)


def run_line(run: Expansion, session: Session, batch: Batch, req: lines.Request) -> None:
    # A second run over the same line at the same time loses on the unique custom_id.
    try:
        _make(run, session, batch, req)
    except IntegrityError:
        session.rollback()
        log.info("batch %s: %r was made by another run", batch.id, req.custom_id)
    except DataError as exc:  # what the database cannot store (a NUL in a string)
        session.rollback()
        why = f"the body holds what cannot be stored: {exc.orig}"[:500]
        items.fail_item(session, batch, req.custom_id, req.line, "invalid_body", why)


def _fail(session: Session, batch_id: uuid.UUID, errors: list[dict[str, Any]]) -> str:
    session.rollback()
    items.end_expansion(session, batch_id, total=0, errors=errors)
    return f"failed: {errors[0]['message']}"


def expand(run: Expansion, session: Session, batch: Batch) -> str:
    """Validate the batch's file whole (status `validating`), then make its items
    and jobs line by line; idempotent like an archive's expansion."""
    if batch.expanded_at is not None or batch.status in BATCH_FINAL:
        return "nothing to do"
    store, settings = run.store, run.settings
    try:
        f = _input(session, store, batch)
    except FileNotFoundError:
        gone = {"code": "missing_file", "message": "the input file is gone", "line": None}
        return _fail(session, batch.id, [gone])
    with f:
        endpoint = batch.endpoint or ""
        total, errors = lines.validate(
            f, endpoint, settings.batch_max_requests, settings.batch_max_line_bytes
        )
        if errors:
            return _fail(session, batch.id, [e.as_dict() for e in errors])
        made = items.start(session, batch, total)
        stop = items.StopCheck(session, batch.id)
        f.seek(0)
        for req in lines.requests(f, endpoint, settings.batch_max_line_bytes):
            if made.get(req.custom_id, BatchItemStatus.pending) != BatchItemStatus.pending:
                continue  # made by an earlier run
            if stop():
                items.end_expansion(session, batch.id)
                return "stopped"
            run_line(run, session, batch, req)
    items.end_expansion(session, batch.id, total=total)
    return "expanded"


def _input(session: Session, store: BlobStore, batch: Batch) -> IO[bytes]:
    """The input file opened (the handle outlives a delete of the file meanwhile)."""
    source = session.get(File, batch.input_file_id) if batch.input_file_id else None
    if source is None:
        raise FileNotFoundError("the input file was deleted")
    return store.path(source.blob_key).open("rb")
