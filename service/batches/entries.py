"""An archive's entries made a chunk at a time (`expansion.expand` reads them): each
entry's bytes received into the temp area as it is read, then per chunk its documents
in one transaction, its items and the new documents' jobs in another, then the new
documents' ingest, which wakes their jobs. A line another run makes meanwhile sends
the chunk back to being made line by line."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ingestion.archives import ArchiveEntry, EntryError
from service.batches import items
from service.blobstore import BlobStore
from service.documents import OcrRequest, ReceivedFile, mark_dispatched, register_uploads
from service.errors import DomainError
from service.jobs import lifecycle as jobs
from service.jobs.schemas import JobCreate
from service.models import Batch, BatchItemStatus, Document

if TYPE_CHECKING:  # it imports this module, to make what it reads
    from service.batches.expansion import Expansion

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


# Entries made together, in a few transactions and one send: an archive of thousands
# expands in one worker slot while its documents wait, and rows, commits and sends
# paid per entry made that slot the bottleneck. Bounded in bytes too: the entries
# wait in the temp area until their chunk is made.
CHUNK_ENTRIES = 64
CHUNK_BYTES = 64 << 20


@dataclass
class _Line:
    """An archive entry read, not yet made: its bytes received, or why it fails."""

    cid: str
    line: int
    received: ReceivedFile | None = None
    error: tuple[str, str] | None = None
    doc: Document | None = None
    created: bool = False


def read(run: Expansion, cid: str, line: int, e: Any) -> _Line:
    if isinstance(e, EntryError):
        return _Line(cid, line, error=(e.code, e.reason))
    try:
        return _Line(cid, line, received=_receive(run.store, e))
    except EntryError as err:
        return _Line(cid, line, error=(err.code, err.reason))


def _store(run: Expansion, session: Session, batch: Batch, chunk: list[_Line]) -> None:
    """The chunk's documents, in one transaction, with the batch's OCR choice (an
    existing document keeps its own, as with a single upload)."""
    lines = [ln for ln in chunk if ln.received is not None]
    received = [ln.received for ln in lines if ln.received is not None]
    ocr_choice = OcrRequest(batch.ocr_mode, batch.ocr_languages)
    got = register_uploads(session, run.store, batch.tenant_id, received, batch.id, ocr_choice)
    for ln, result in zip(lines, got, strict=True):
        if isinstance(result, DomainError):
            ln.error = (result.code, result.reason)
        else:
            ln.doc, ln.created = result
    # The commit expired them: loaded again in one query, not one each as they are read.
    keys = [inspect(ln.doc).identity for ln in chunk if ln.doc is not None]
    ids = [key[0] for key in keys if key is not None]
    if ids:
        session.scalars(select(Document).where(Document.id.in_(ids))).all()


def _parse(run: Expansion, session: Session, chunk: list[_Line]) -> None:
    """The new documents' ingest sent, after their jobs are committed: the ingest
    wakes them once parsed (the sweeper, should that be lost), so they need no task
    of their own before then."""
    sent = []
    for ln in chunk:
        if ln.created and ln.doc is not None:
            try:
                run.dispatch_ingest(str(ln.doc.id))
                sent.append(ln.doc.id)
            except Exception:
                log.exception("could not queue document %s; the sweeper will", ln.doc.id)
    mark_dispatched(session, sent)


def _make(
    run: Expansion, session: Session, batch: Batch, chunk: list[_Line], made: set[str]
) -> None:
    """A chunk of entries made: their documents (`_store`), their items and the jobs
    of the new documents in one more transaction, then the new documents' ingest
    sent. A line another run made meanwhile (a task sent twice) fails that
    transaction; then each line is made on its own, and that one is left to the other
    run."""
    _store(run, session, batch, chunk)
    try:
        _together(run, session, batch, chunk, made)
    except (IntegrityError, DomainError):
        session.rollback()
        for ln in chunk:
            _one(run, session, batch, ln)
    else:
        for ln in chunk:
            if ln.doc is not None and not ln.created:
                _one(run, session, batch, ln)  # an existing document: `jobs.create` plans it
    _parse(run, session, chunk)


def _body(batch: Batch, doc_id: uuid.UUID, cid: str) -> JobCreate:
    return JobCreate(
        document_id=doc_id,
        task=batch.task or "",
        params=batch.params or {},
        max_output_tokens=batch.max_output_tokens or 1024,
        idempotency_key=items.job_key(batch.id, cid),
    )


def _together(
    run: Expansion, session: Session, batch: Batch, chunk: list[_Line], made: set[str]
) -> None:
    """The chunk's items, and the jobs of its new documents, in one transaction."""
    new = [ln for ln in chunk if ln.created and ln.doc is not None]
    for ln in chunk:
        # Every line's item in this one commit, in line order with the chunks before
        # and after: the results cursor (`result_cursor`) relies on no item appearing
        # below one already seen. A line on an existing document gets its job after.
        if ln.error is not None:
            row = items.item(session, batch.id, ln.cid, ln.line, known_new=ln.cid not in made)
            row.status, row.error_code, row.error_reason = BatchItemStatus.failed, *ln.error
        elif ln.doc is not None and not ln.created:
            row = items.item(session, batch.id, ln.cid, ln.line, known_new=ln.cid not in made)
            row.document_id = ln.doc.id
    if not new:
        session.commit()
        return
    on = [(ln.doc, items.job_key(batch.id, ln.cid)) for ln in new if ln.doc is not None]
    body = _body(batch, on[0][0].id, new[0].cid)
    made_jobs = jobs.create_waiting(session, run.settings, batch.tenant_id, body, on, batch.id)
    session.flush()  # the jobs' ids
    for ln, job in zip(new, made_jobs, strict=True):
        row = items.item(session, batch.id, ln.cid, ln.line, known_new=ln.cid not in made)
        row.document_id, row.job_id, row.status = job.document_id, job.id, BatchItemStatus.queued
    session.commit()


def _one(run: Expansion, session: Session, batch: Batch, ln: _Line) -> None:
    """One line made on its own, once: a second run over it at the same time loses on
    the unique custom_id, and leaves the line to the first."""
    try:
        _line(run, session, batch, ln)
    except IntegrityError:
        session.rollback()
        log.info("batch %s: %r was made by another run", batch.id, ln.cid)


def _line(run: Expansion, session: Session, batch: Batch, ln: _Line) -> None:
    if ln.error is not None or ln.doc is None:
        code, reason = ln.error or ("internal_error", "the entry was not stored")
        items.fail_item(session, batch, ln.cid, ln.line, code, reason)
        return
    item = items.item(session, batch.id, ln.cid, ln.line)
    item.document_id = ln.doc.id
    session.flush()  # another run's item surfaces here
    body = _body(batch, ln.doc.id, ln.cid)
    try:
        job, _, send = jobs.create(session, run.settings, batch.tenant_id, body, batch_id=batch.id)
    except DomainError as err:
        items.fail_item(session, batch, ln.cid, ln.line, err.code, err.reason)
        return
    item = items.item(session, batch.id, ln.cid, ln.line)
    item.job_id, item.status = job.id, BatchItemStatus.queued
    if send:
        run.send_jobs(session, send)  # its commit is the item's too
    session.commit()  # (nothing left to commit, when it was)


class Chunks:
    """Lines read from the archive, made a chunk at a time."""

    def __init__(self, run: Expansion, session: Session, batch: Batch, made: set[str]) -> None:
        self.run, self.session, self.batch, self.made = run, session, batch, made
        self.lines: list[_Line] = []
        self.size = 0

    def add(self, ln: _Line) -> None:
        self.lines.append(ln)
        self.size += ln.received.size if ln.received else 0
        if len(self.lines) >= CHUNK_ENTRIES or self.size >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        lines, self.lines, self.size = self.lines, [], 0
        if lines:
            _make(self.run, self.session, self.batch, lines, self.made)

    def drop(self) -> None:
        for ln in self.lines:
            if ln.received is not None:
                ln.received.tmp_path.unlink(missing_ok=True)
        self.lines = []
