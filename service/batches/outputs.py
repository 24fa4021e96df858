"""A batch's output and error files, written as its requests end: each final
request's line (`results.entry`) is appended to the batch's `batch_output` file if it
succeeded, to its error file if not; each File row is made with its first line.

Exactly once, whatever stops the worker: a file's committed length is its row's
`size_bytes`, and an item's line is written when its `written_at` is set, both in the
caller's transaction (the batch's row locked). Before appending, the blob is cut back
to `size_bytes`, so bytes a crash left past the last commit are written over, and the
items they were for, not marked, are written again. Readers read `size_bytes` bytes.
Once the batch is final its files are sealed (sha256, `processed`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from typing import IO

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from service.batches import results
from service.batches import status as rules
from service.blobstore import BlobStore
from service.files import blob_key
from service.models import (
    FINAL,
    Batch,
    BatchItem,
    BatchItemStatus,
    File,
    FilePurpose,
    FileStatus,
    Job,
    utcnow,
)

log = logging.getLogger(__name__)
PAGE = 200
_OWN_FINAL = (BatchItemStatus.failed, BatchItemStatus.cancelled, BatchItemStatus.expired)
_KINDS = {True: ("output_file_id", "output"), False: ("error_file_id", "error")}


class _Appender:
    """One of the batch's files, open for appending past its committed length."""

    def __init__(self, session: Session, store: BlobStore, batch: Batch, ok: bool) -> None:
        column, name = _KINDS[ok]
        row = session.get(File, getattr(batch, column)) if getattr(batch, column) else None
        if row is None:
            row = File(
                id=uuid.uuid4(), tenant_id=batch.tenant_id, purpose=FilePurpose.batch_output,
                filename=f"batch_{batch.id.hex}_{name}.jsonl", size_bytes=0, sha256="",
                status=FileStatus.uploaded, created_at=utcnow(),
            )  # fmt: skip
            row.blob_key = blob_key(row.id)
            session.add(row)
            session.flush()
            setattr(batch, column, row.id)
        self.row = row
        path = store.path(row.blob_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() and row.size_bytes:
            # Its bytes were lost outside Longdoc: go on from empty rather than pad.
            log.error("batch %s: its %s file %s lost its bytes", batch.id, name, row.id)
            row.size_bytes = 0
        self.f: IO[bytes] = path.open("r+b" if path.exists() else "w+b")
        self.f.truncate(row.size_bytes)
        self.f.seek(row.size_bytes)
        self.pending: list[bytes] = []

    def flush(self) -> None:
        data = b"".join(self.pending)
        self.pending.clear()
        if data:
            self.f.write(data)
            self.f.flush()
            os.fsync(self.f.fileno())  # on disk before the commit that counts it
            self.row.size_bytes += len(data)


def _final() -> ColumnElement[bool]:
    own = and_(BatchItem.job_id.is_(None), BatchItem.status.in_(_OWN_FINAL))
    return or_(own, Job.status.in_(FINAL))


def write(session: Session, store: BlobStore, batch: Batch, limit: int) -> int:
    """Append the lines of up to `limit` final requests not written yet, in line
    order; returns how many. In the caller's transaction, the batch's row locked."""
    files: dict[bool, _Appender] = {}
    done = 0
    try:
        while done < limit:
            rows = session.execute(
                select(BatchItem, Job)
                .outerjoin(Job, Job.id == BatchItem.job_id)
                .where(BatchItem.batch_id == batch.id, BatchItem.written_at.is_(None), _final())
                .order_by(BatchItem.line)
                .limit(min(PAGE, limit - done))
            ).all()
            if not rows:
                break
            now = utcnow()
            for item, job in rows:
                state = rules.effective(
                    item.status, job.status if job else None, job.error_code if job else None
                )
                text, ok = results.entry(session, item, job, state, admin=False)
                if ok not in files:
                    files[ok] = _Appender(session, store, batch, ok)
                files[ok].pending.append(text.encode())
                item.written_at = now
            for appender in files.values():
                appender.flush()
            session.flush()
            done += len(rows)
    finally:
        for appender in files.values():
            appender.f.close()
    return done


def unwritten(session: Session, batch_id: uuid.UUID) -> int:
    """The batch's requests whose line is not written (final or not)."""
    stmt = select(func.count()).where(
        BatchItem.batch_id == batch_id, BatchItem.written_at.is_(None)
    )
    return session.scalar(stmt) or 0


def seal(session: Session, store: BlobStore, batch: Batch) -> None:
    """The finished batch's files: their sha256 and `processed` (no line comes after)."""
    for column, _ in _KINDS.values():
        row = session.get(File, getattr(batch, column)) if getattr(batch, column) else None
        if row is None or row.status == FileStatus.processed:
            continue
        digest = hashlib.sha256()
        try:
            with store.path(row.blob_key).open("rb") as f:
                left = row.size_bytes
                while left > 0 and (block := f.read(min(left, 1 << 20))):
                    digest.update(block)
                    left -= len(block)
        except FileNotFoundError:
            log.error("batch %s: its %s file %s lost its bytes", batch.id, column, row.id)
            row.status, row.status_details = FileStatus.error, "its bytes are gone"
            continue
        row.sha256, row.status = digest.hexdigest(), FileStatus.processed
