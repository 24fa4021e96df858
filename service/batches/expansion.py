"""Expanding an archive batch: its stored archive read again, entry by entry, each
made a document, an item and a job (or a failed item). Idempotent: an entry that has
its item already is skipped, so a re-run after a crash goes on where the last one
stopped; once every line is made the archive is removed from the blob store."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingestion.archives import ArchiveEntry, ArchiveError, EntryError, open_archive
from service.batches import items, messages, requests
from service.batches.archives import custom_id, limits
from service.blobstore import BlobStore
from service.config import Settings
from service.db import write_transaction
from service.documents import ReceivedFile, lock_blob, mark_dispatched, register_upload
from service.errors import DomainError
from service.jobs import lifecycle as jobs
from service.jobs.schemas import JobCreate
from service.models import BATCH_FINAL, Batch, BatchItemStatus

log = logging.getLogger(__name__)


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
        items.fail_item(session, batch, cid, line, e.code, e.reason)
        return
    try:
        received = _receive(run.store, e)
        doc, created = register_upload(session, run.store, batch.tenant_id, received)
    except (EntryError, DomainError) as err:
        items.fail_item(session, batch, cid, line, err.code, err.reason)
        return
    if created:
        doc.batch_id = batch.id
        session.commit()
        try:
            run.dispatch_ingest(str(doc.id))
            mark_dispatched(session, doc)
        except Exception:
            log.exception("could not queue document %s; the sweeper will", doc.id)
    item = items.item(session, batch.id, cid, line)
    item.document_id = doc.id
    session.commit()
    body = JobCreate(
        document_id=doc.id,
        task=batch.task or "",
        params=batch.params or {},
        max_output_tokens=batch.max_output_tokens or 1024,
        idempotency_key=items.job_key(batch.id, cid),
    )
    try:
        job, _, send = jobs.create(session, run.settings, batch.tenant_id, body, batch_id=batch.id)
    except DomainError as err:
        items.fail_item(session, batch, cid, line, err.code, err.reason)
        return
    item = items.item(session, batch.id, cid, line)
    item.job_id, item.status = job.id, BatchItemStatus.queued
    session.commit()
    if send:
        run.send_jobs(session, send)


def expand(run: Expansion, session: Session, batch_id: uuid.UUID) -> str:
    """Make the batch's items, entry by entry (a request file's: line by line, in
    `requests`); returns how it ended (for the log). An ArchiveError met on the way
    fails the batch with it; the items made stay."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.expanded_at is not None or batch.status in BATCH_FINAL:
        return "nothing to do"
    if batch.kind == requests.KIND:
        return requests.expand(run, session, batch)
    if batch.kind == messages.KIND:
        return messages.expand(run, session, batch)
    if batch.sha256 is None:
        return "not an archive batch"
    made = items.start(session, batch)
    seen: set[str] = set()
    line = 0
    ended = "expanded"
    sha = batch.sha256
    try:
        with open_archive(run.store.archive(sha), limits(run.settings)) as archive:
            for found in archive:
                line += 1
                cid = custom_id(found.name, line, seen)
                if made.get(cid, BatchItemStatus.pending) != BatchItemStatus.pending:
                    continue  # made by an earlier run
                if not items.running(session, batch_id):
                    ended = "stopped"
                    break
                _entry(run, session, batch, cid, line, found)
    except ArchiveError as exc:
        session.rollback()
        errors = [{"code": exc.code, "message": exc.reason, "line": line + 1}]
        items.end_expansion(session, batch_id, errors=errors)
        drop_archive(session, run.store, sha)
        return f"failed: {exc.reason}"
    except FileNotFoundError:
        session.rollback()
        errors = [{"code": "missing", "message": "the stored archive is gone", "line": None}]
        items.end_expansion(session, batch_id, errors=errors)
        return "failed: the stored archive is gone"
    items.end_expansion(session, batch_id, total=line if ended == "expanded" else None)
    drop_archive(session, run.store, sha)
    return ended


def drop_archive(session: Session, store: BlobStore, sha256: str) -> None:
    """Remove the archive once no batch over it is still expanding (its items hold all
    it is needed for). Under the blob's lock, against a new batch storing it again."""
    with write_transaction(session):
        lock_blob(session, sha256)
        busy = select(func.count()).where(Batch.sha256 == sha256, Batch.expanded_at.is_(None))
        if not session.scalar(busy):
            store.delete(store.archive(sha256))
