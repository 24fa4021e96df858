"""Expanding an archive batch: its stored archive read again, entry by entry, each
made a document, an item and a job (or a failed item), a chunk at a time (`entries`).
Idempotent: an entry that has its item already is skipped, so a re-run after a crash
goes on where the last one stopped; once every line is made the archive is removed
from the blob store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ingestion.archives import ArchiveError, open_archive
from service.batches import entries, items, messages, requests
from service.batches.archives import custom_id, limits
from service.blobstore import BlobStore
from service.config import Settings
from service.db import write_transaction
from service.documents import lock_blob
from service.models import BATCH_FINAL, Batch, BatchItemStatus

log = logging.getLogger(__name__)


@dataclass
class Expansion:
    """One run of `expand` over a batch: what it needs besides the database."""

    settings: Settings
    store: BlobStore
    dispatch_ingest: Callable[[str], None]
    send_jobs: Callable[[Session, list[uuid.UUID]], None]


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
    stop = items.StopCheck(session, batch_id)
    chunks = entries.Chunks(run, session, batch, set(made))
    seen: set[str] = set()
    line = 0
    ended = "expanded"
    sha = batch.sha256
    try:
        try:
            with open_archive(run.store.archive(sha), limits(run.settings)) as archive:
                for found in archive:
                    line += 1
                    cid = custom_id(found.name, line, seen)
                    if made.get(cid, BatchItemStatus.pending) != BatchItemStatus.pending:
                        continue  # made by an earlier run
                    if stop():
                        ended = "stopped"
                        break
                    chunks.add(entries.read(run, cid, line, found))
        finally:
            # What was read is made however the reading ended: its items stay.
            chunks.flush()
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
    finally:
        chunks.drop()
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
