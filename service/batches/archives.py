"""Archive batches: an uploaded archive becomes a batch, then, entry by entry, a
document, an item and a job each (an entry refused by the reader: a failed item).

The API scans the archive once before anything is stored (`scan`: the whole-archive
limits and damage are refused there, 413/422, with the limit named), so a batch's
`total` is known from the start. `expand` (a worker task) reads the stored archive
again and is idempotent: an entry that already has its item (and job) is skipped,
so a re-run after a crash goes on where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingestion.archives import (
    ArchiveEntry,
    ArchiveError,
    ArchiveLimitError,
    ArchiveLimits,
    EntryError,
    open_archive,
)
from service.batches import status as rules
from service.blobstore import BlobStore
from service.config import Settings
from service.documents import ReceivedFile, mark_dispatched, register_upload
from service.errors import DomainError, Invalid, TooLarge
from service.jobs import lifecycle as jobs
from service.jobs.schemas import JobCreate
from service.models import BATCH_FINAL, Batch, BatchItem, BatchItemStatus, BatchStatus, utcnow

log = logging.getLogger(__name__)
_RETRIED = (BatchStatus.failed, BatchStatus.cancelled, BatchStatus.expired)
_SETTING = {
    "max_entries": "archive_max_entries",
    "max_total_bytes": "archive_max_total_bytes",
    "max_total_ratio": "archive_max_ratio",
}
MAX_CUSTOM_ID = 1024


@dataclass(frozen=True)
class ArchiveRequest:
    """What runs on every entry, and the batch's own fields."""

    task: str
    params: dict[str, Any]
    max_output_tokens: int = 1024
    completion_window: str = "24h"
    metadata: dict[str, Any] | None = None


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
    return ArchiveRequest(
        request.task, params, request.max_output_tokens, request.completion_window, request.metadata
    )


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
    body = [sha256, request.task, request.params, request.max_output_tokens]
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


def _reusable(session: Session, tenant_id: uuid.UUID, key: str) -> Batch | None:
    """The batch this request names, or None. One that ended badly gives its key up."""
    found = session.scalar(
        select(Batch).where(Batch.tenant_id == tenant_id, Batch.dedup_key == key)
    )
    if found is None or found.status not in _RETRIED:
        return found
    found.dedup_key = f"{key}@{found.id.hex}"
    session.flush()
    return None


def create(
    session: Session,
    settings: Settings,
    store: BlobStore,
    tenant_id: uuid.UUID,
    received: ReceivedFile,
    request: ArchiveRequest,
) -> tuple[Batch, bool]:
    """(batch, created): the same archive + task + params + budget from the tenant is
    the batch it made before. The archive is checked whole before it is stored."""
    try:
        key = dedup_key(received.sha256, request)
        existing = _reusable(session, tenant_id, key)
        session.commit()
        if existing is not None:
            return existing, False
        total = scan(received.tmp_path, limits(settings), received.filename)
        store.commit(received.tmp_path, store.archive(received.sha256))
        now = utcnow()
        batch = Batch(
            tenant_id=tenant_id,
            kind="archive",
            status=BatchStatus.validating,
            filename=received.filename,
            sha256=received.sha256,
            task=request.task,
            params=request.params,
            max_output_tokens=request.max_output_tokens,
            dedup_key=key,
            completion_window=request.completion_window,
            expires_at=now + rules.window(request.completion_window),
            meta=request.metadata,
            total=total,
            created_at=now,
        )
        session.add(batch)
        try:
            session.commit()
        except Exception:
            session.rollback()
            winner = session.scalar(
                select(Batch).where(Batch.tenant_id == tenant_id, Batch.dedup_key == key)
            )
            if winner is None:
                raise
            return winner, False
        return batch, True
    finally:
        received.tmp_path.unlink(missing_ok=True)


def custom_id(name: str, line: int, seen: set[str]) -> str:
    """The entry's path, unique in the batch: a refused entry may repeat a name (a
    duplicate) or be over any length, so it gets its line after `#`."""
    cid = name if len(name) <= MAX_CUSTOM_ID else name[:MAX_CUSTOM_ID] + f"#{line}"
    if cid in seen:
        cid = f"{name[:MAX_CUSTOM_ID]}#{line}"
    seen.add(cid)
    return cid


def _job_key(batch_id: uuid.UUID, cid: str) -> str:
    return "batch:" + hashlib.sha256(f"{batch_id}\0{cid}".encode()).hexdigest()


def _filename(name: str) -> str:
    # The reader has normalised the path already (printable, no `..`): its last part.
    base = name.rsplit("/", 1)[-1]
    while len(base.encode()) > 255:
        base = base[:-1]
    return base or "entry"


def _receive(store: BlobStore, entry: ArchiveEntry) -> ReceivedFile:
    """The entry's bytes into the blob store's temp area, as an upload's are."""
    fd, tmp = store.temp_file(prefix="entry-")
    digest, size, head = hashlib.sha256(), 0, b""
    try:
        try:
            for chunk in entry.chunks():
                digest.update(chunk)
                size += len(chunk)
                head = head or chunk
                os.write(fd, chunk)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return ReceivedFile(tmp, digest.hexdigest(), size, _filename(entry.name), head)


@dataclass
class Expansion:
    """One run of `expand` over a batch: what it needs besides the database."""

    settings: Settings
    store: BlobStore
    dispatch_ingest: Callable[[str], None]
    send_jobs: Callable[[Session, list[uuid.UUID]], None]


def _item(session: Session, batch_id: uuid.UUID, cid: str, line: int) -> BatchItem:
    found = session.scalar(
        select(BatchItem).where(BatchItem.batch_id == batch_id, BatchItem.custom_id == cid)
    )
    if found is None:
        found = BatchItem(batch_id=batch_id, custom_id=cid, line=line)
        session.add(found)
    return found


def _fail_item(session: Session, batch: Batch, cid: str, line: int, code: str, why: str) -> None:
    item = _item(session, batch.id, cid, line)
    item.status, item.error_code, item.error_reason = BatchItemStatus.failed, code, why
    session.commit()


def _entry(run: Expansion, session: Session, batch: Batch, cid: str, line: int, e: Any) -> None:
    """One line of the archive, once: a second run over it at the same time (a task
    sent again) loses on the unique custom_id, and leaves the line to the first."""
    try:
        _make(run, session, batch, cid, line, e)
    except IntegrityError:
        session.rollback()
        log.info("batch %s: %r was made by another run", batch.id, cid)


def _make(run: Expansion, session: Session, batch: Batch, cid: str, line: int, e: Any) -> None:
    """One line of the archive: a failed item, or a document, an item and a job."""
    if isinstance(e, EntryError):
        _fail_item(session, batch, cid, line, e.code, e.reason)
        return
    try:
        received = _receive(run.store, e)
        doc, created = register_upload(session, run.store, batch.tenant_id, received)
    except (EntryError, DomainError) as err:
        _fail_item(session, batch, cid, line, err.code, err.reason)
        return
    if created:
        doc.batch_id = batch.id
        session.commit()
        try:
            run.dispatch_ingest(str(doc.id))
            mark_dispatched(session, doc)
        except Exception:
            log.exception("could not queue document %s; the sweeper will", doc.id)
    item = _item(session, batch.id, cid, line)
    item.document_id = doc.id
    session.commit()
    body = JobCreate(
        document_id=doc.id,
        task=batch.task or "",
        params=batch.params or {},
        max_output_tokens=batch.max_output_tokens or 1024,
        idempotency_key=_job_key(batch.id, cid),
    )
    try:
        job, _, send = jobs.create(session, run.settings, batch.tenant_id, body, batch_id=batch.id)
    except DomainError as err:
        _fail_item(session, batch, cid, line, err.code, err.reason)
        return
    item = _item(session, batch.id, cid, line)
    item.job_id, item.status = job.id, BatchItemStatus.queued
    session.commit()
    if send:
        run.send_jobs(session, send)


def _running(session: Session, batch_id: uuid.UUID) -> bool:
    now = session.scalar(select(Batch.status).where(Batch.id == batch_id))
    session.rollback()  # read fresh each time: a cancel may land while we expand
    return now in (BatchStatus.validating, BatchStatus.in_progress)


def _start(session: Session, batch: Batch) -> dict[str, BatchItemStatus]:
    if batch.status == BatchStatus.validating:
        batch.status, batch.in_progress_at = BatchStatus.in_progress, utcnow()
    done = session.execute(
        select(BatchItem.custom_id, BatchItem.status).where(BatchItem.batch_id == batch.id)
    ).all()
    session.commit()
    return {r.custom_id: r.status for r in done}


def expand(run: Expansion, session: Session, batch_id: uuid.UUID) -> str:
    """Make the batch's items, entry by entry; returns how it ended (for the log).
    An ArchiveError met on the way fails the batch with it; the items made stay."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.expanded_at is not None or batch.status in BATCH_FINAL:
        return "nothing to do"
    if batch.sha256 is None:
        return "not an archive batch"
    made = _start(session, batch)
    seen: set[str] = set()
    line = 0
    ended = "expanded"
    try:
        with open_archive(run.store.archive(batch.sha256), limits(run.settings)) as archive:
            for found in archive:
                line += 1
                cid = custom_id(found.name, line, seen)
                if made.get(cid, BatchItemStatus.pending) != BatchItemStatus.pending:
                    continue  # made by an earlier run
                if not _running(session, batch_id):
                    ended = "stopped"
                    break
                _entry(run, session, batch, cid, line, found)
    except ArchiveError as exc:
        session.rollback()
        errors = [{"code": exc.code, "message": exc.reason, "line": line + 1}]
        _end_expansion(session, batch_id, errors=errors)
        return f"failed: {exc.reason}"
    _end_expansion(session, batch_id, total=line if ended == "expanded" else None)
    return ended


def _end_expansion(
    session: Session,
    batch_id: uuid.UUID,
    *,
    total: int | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> None:
    """Record that no more items will be made: `total` the lines read, or (stopped by a
    cancel or an expiry, or failed) the items made, so the batch can end."""
    now = utcnow()
    if total is None:
        made = select(func.count()).select_from(BatchItem).where(BatchItem.batch_id == batch_id)
        total = session.scalar(made) or 0
    values: dict[str, Any] = {"expanded_at": now, "total": total}
    stmt = update(Batch).where(Batch.id == batch_id)
    session.execute(stmt.values(**values))
    if errors is not None:
        running = Batch.status.in_((BatchStatus.validating, BatchStatus.in_progress))
        stmt = update(Batch).where(Batch.id == batch_id, running)
        session.execute(stmt.values(status=BatchStatus.failed, failed_at=now, errors=errors))
    session.commit()
