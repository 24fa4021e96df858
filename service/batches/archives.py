"""Archive batches: an uploaded archive becomes a batch (`service.batches.expansion`
then makes a document, an item and a job of each entry).

The API scans the archive once before anything is stored (`scan`: the whole-archive
limits and damage are refused there, 413/422, with the limit named), so a batch's
`total` is known from the start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from ingestion.archives import (
    ArchiveError,
    ArchiveLimitError,
    ArchiveLimits,
    open_archive,
)
from service.batches import catalog
from service.batches import lifecycle as batches
from service.batches import status as rules
from service.blobstore import BlobStore
from service.config import Settings
from service.db import write_transaction
from service.documents import OcrRequest, ReceivedFile, lock_blob
from service.errors import Invalid, TooLarge
from service.jobs import lifecycle as jobs
from service.jobs.schemas import JobCreate
from service.models import Batch, BatchStatus, utcnow

log = logging.getLogger(__name__)
_SETTING = {
    "max_entries": "archive_max_entries",
    "max_total_bytes": "archive_max_total_bytes",
    "max_total_ratio": "archive_max_ratio",
}
MAX_CUSTOM_ID = 1024
KIND = "archive"


@dataclass(frozen=True)
class ArchiveRequest:
    """What runs on every entry, and the batch's own fields."""

    task: str
    params: dict[str, Any]
    max_output_tokens: int = 1024
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None
    callback_url: str | None = None
    # Checked as a single upload's (`documents.ocr_request`), before the archive is read.
    ocr: OcrRequest = field(default_factory=OcrRequest)


def validated(request: ArchiveRequest, settings: Settings) -> ArchiveRequest:
    """The request with its params normalised; Invalid (422) before any upload is read."""
    try:
        rules.window(request.completion_window)
    except ValueError as exc:
        raise Invalid("bad_window", str(exc), field="completion_window") from None
    body = JobCreate(
        document_id=uuid.UUID(int=0),
        task=request.task,
        params=request.params,
        max_output_tokens=request.max_output_tokens,
    )
    params = jobs.validated(body, settings)
    return replace(request, params=params)


def limits(settings: Settings) -> ArchiveLimits:
    return ArchiveLimits(
        max_entries=settings.archive_max_entries,
        max_total_bytes=settings.archive_max_total_bytes,
        max_entry_bytes=settings.max_upload_bytes,
        max_entry_ratio=settings.archive_max_ratio,
        max_total_ratio=settings.archive_max_ratio,
        max_path_length=settings.archive_max_path_length,
    )


def dedup_key(sha256: str, request: ArchiveRequest) -> str:
    body: list[Any] = [sha256, request.task, request.params, request.max_output_tokens]
    if request.ocr != OcrRequest():
        # Another OCR choice is another batch; without one the key is what it was
        # before batches took OCR, so those batches are still found.
        body.append([request.ocr.mode, request.ocr.languages])
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def scan(source: Any, archive_limits: ArchiveLimits, filename: str | None = None) -> int:
    """The archive's lines (entries and refused entries), read through once without
    keeping a byte: TooLarge (`limit` named) or Invalid (what is wrong with it)."""
    try:
        with open_archive(source, archive_limits, filename=filename) as archive:
            return sum(1 for _ in archive)
    except ArchiveLimitError as exc:
        setting = _SETTING.get(exc.limit, exc.limit)
        raise TooLarge(
            "archive_too_large", exc.reason, field="body.file", limit=exc.limit, setting=setting
        ) from None
    except ArchiveError as exc:
        raise Invalid(f"archive_{exc.code}", exc.reason, field="body.file") from None


def create(
    session: Session,
    settings: Settings,
    store: BlobStore,
    tenant_id: uuid.UUID,
    received: ReceivedFile,
    request: ArchiveRequest,
) -> tuple[Batch, bool]:
    """(batch, created): the same archive + task + params + budget + OCR choice from the
    tenant is the batch it made before. The archive is checked whole before it is stored."""
    try:
        key = dedup_key(received.sha256, request)
        existing = batches.reusable(session, tenant_id, key)
        session.commit()
        if existing is not None:
            return existing, False
        total = scan(received.tmp_path, limits(settings), received.filename)
        now = utcnow()
        batch = Batch(
            tenant_id=tenant_id,
            kind=KIND,
            status=BatchStatus.validating,
            filename=received.filename,
            sha256=received.sha256,
            task=request.task,
            params=request.params,
            max_output_tokens=request.max_output_tokens,
            callback_url=request.callback_url,
            ocr_mode=request.ocr.mode,
            ocr_languages=request.ocr.languages,
            dedup_key=key,
            completion_window=request.completion_window,
            expires_at=now + rules.window(request.completion_window),
            meta=request.metadata,
            total=total,
            created_at=now,
        )
        return catalog.insert_once(session, batch, lambda: _store(session, store, received, batch))
    finally:
        received.tmp_path.unlink(missing_ok=True)


def _store(session: Session, store: BlobStore, received: ReceivedFile, batch: Batch) -> None:
    """The archive put in place and its batch inserted under the blob's lock: an
    expansion ending meanwhile (which removes the archive once no batch over it still
    expands, `expansion.drop_archive`) either sees this batch or ran before."""
    with write_transaction(session):
        lock_blob(session, received.sha256)
        store.commit(received.tmp_path, store.archive(received.sha256))
        session.add(batch)


def custom_id(name: str, line: int, seen: set[str]) -> str:
    """The entry's path, unique in the batch: a refused entry may repeat a name (a
    duplicate) or be over any length, so it gets its line after `#`."""
    cid = name if len(name) <= MAX_CUSTOM_ID else name[:MAX_CUSTOM_ID] + f"#{line}"
    if cid in seen:
        cid = f"{name[:MAX_CUSTOM_ID]}#{line}"
    seen.add(cid)
    return cid
