"""A tenant's batches: inserted once per dedup key, listed, deleted."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import files
from service.batches.lifecycle import get_owned
from service.blobstore import BlobStore
from service.db import write_transaction
from service.errors import Conflict
from service.models import BATCH_FINAL, Batch, File


def insert_once(
    session: Session, batch: Batch, insert: Callable[[], None] | None = None
) -> tuple[Batch, bool]:
    """(batch, True) once `insert` (by default: add and commit) has stored it; (the
    batch another request made with the same dedup key meanwhile, False) when that one
    won the race, this one rolled back."""
    try:
        if insert is None:
            session.add(batch)
            session.commit()
        else:
            insert()
    except IntegrityError:
        session.rollback()
        winner = session.scalar(
            select(Batch).where(
                Batch.tenant_id == batch.tenant_id, Batch.dedup_key == batch.dedup_key
            )
        )
        if winner is None:
            raise
        return winner, False
    return batch, True


def list_owned(
    session: Session,
    tenant_id: uuid.UUID,
    limit: int,
    after: str | None,
    *,
    before: str | None = None,
    kind: str | None = None,
) -> tuple[list[Batch], bool]:
    """Newest first; `after` (`before`) a batch id from an earlier page: the page of
    older (newer) batches next to it. `kind` keeps only batches of that kind.
    (rows, has_more)."""
    query = select(Batch).where(Batch.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(Batch.kind == kind)
    newest_first = before is None
    if after is not None or before is not None:
        mark = get_owned(session, tenant_id, after or before or "")
        older = or_(
            Batch.created_at < mark.created_at,
            and_(Batch.created_at == mark.created_at, Batch.id > mark.id),
        )
        newer = or_(
            Batch.created_at > mark.created_at,
            and_(Batch.created_at == mark.created_at, Batch.id < mark.id),
        )
        query = query.where(older if newest_first else newer)
    order = (
        (Batch.created_at.desc(), Batch.id) if newest_first else (Batch.created_at, Batch.id.desc())
    )
    rows = list(session.scalars(query.order_by(*order).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return (rows if newest_first else rows[::-1]), more


def delete(session: Session, batch: Batch, store: BlobStore) -> None:
    """Delete an ended batch with its items and files; its jobs and documents stay
    (they are the tenant's own). Conflict while it still runs."""
    if batch.status not in BATCH_FINAL:
        raise Conflict(
            "batch_not_ended",
            f"the batch is {batch.status.value}; cancel it and wait until it has ended",
        )
    kept = [batch.input_file_id, batch.output_file_id, batch.error_file_id]
    with write_transaction(session):
        session.delete(batch)
    # Then its files, each with its bytes (a file whose delete fails stays listed).
    for file_id in kept:
        row = session.get(File, file_id) if file_id is not None else None
        if row is not None:
            files.delete(session, store, row)
