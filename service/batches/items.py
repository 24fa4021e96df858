"""Making a batch's requests, whichever way it came in: an item per line (unique by
custom_id in its batch, so a second run over a line loses and leaves it to the first),
a failed item with its reason, the job's idempotency key, and the start and end of an
expansion."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.models import Batch, BatchItem, BatchItemStatus, BatchStatus, utcnow


def job_key(batch_id: uuid.UUID, cid: str) -> str:
    return "batch:" + hashlib.sha256(f"{batch_id}\0{cid}".encode()).hexdigest()


def item(
    session: Session, batch_id: uuid.UUID, cid: str, line: int, *, known_new: bool = False
) -> BatchItem:
    """The line's item, found or added (not looked for when the caller knows there is
    none: `known_new`)."""
    found = None
    if not known_new:
        found = session.scalar(
            select(BatchItem).where(BatchItem.batch_id == batch_id, BatchItem.custom_id == cid)
        )
    if found is None:
        found = BatchItem(batch_id=batch_id, custom_id=cid, line=line)
        session.add(found)
    return found


def fail_item(session: Session, batch: Batch, cid: str, line: int, code: str, why: str) -> None:
    row = item(session, batch.id, cid, line)
    row.status, row.error_code, row.error_reason = BatchItemStatus.failed, code, why
    session.commit()


def running(session: Session, batch_id: uuid.UUID) -> bool:
    now = session.scalar(select(Batch.status).where(Batch.id == batch_id))
    session.rollback()  # read fresh each time: a cancel may land while we expand
    return now in (BatchStatus.validating, BatchStatus.in_progress)


class StopCheck:
    """Whether an expansion should stop (its batch cancelled or expired), read from the
    database at most every `every_s`: a read per line cost as much as making the
    line, and a stop within a second is soon enough."""

    def __init__(self, session: Session, batch_id: uuid.UUID, every_s: float = 1.0) -> None:
        self._session, self._batch_id, self._every_s = session, batch_id, every_s
        self._next: float | None = None

    def __call__(self) -> bool:
        now = time.monotonic()
        if self._next is not None and now < self._next:
            return False
        self._next = now + self._every_s
        return not running(self._session, self._batch_id)


def start(session: Session, batch: Batch, total: int | None = None) -> dict[str, BatchItemStatus]:
    """The batch in progress (with its `total`, once known); the items made so far."""
    if batch.status == BatchStatus.validating:
        batch.status, batch.in_progress_at = BatchStatus.in_progress, utcnow()
    if total is not None:
        batch.total = total
    done = session.execute(
        select(BatchItem.custom_id, BatchItem.status).where(BatchItem.batch_id == batch.id)
    ).all()
    session.commit()
    return {r.custom_id: r.status for r in done}


def end_expansion(
    session: Session,
    batch_id: uuid.UUID,
    *,
    total: int | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> None:
    """Record that no more items will be made: `total` the lines read, or (stopped by a
    cancel or an expiry, or failed) the items made, so the batch can end. With
    `errors`, a batch still running fails with them."""
    now = utcnow()
    if total is None:
        made = select(func.count()).select_from(BatchItem).where(BatchItem.batch_id == batch_id)
        total = session.scalar(made) or 0
    values: dict[str, Any] = {"expanded_at": now, "total": total}
    stmt = update(Batch).where(Batch.id == batch_id)
    session.execute(stmt.values(**values))
    if errors is not None:
        live = Batch.status.in_((BatchStatus.validating, BatchStatus.in_progress))
        stmt = update(Batch).where(Batch.id == batch_id, live)
        session.execute(stmt.values(status=BatchStatus.failed, failed_at=now, errors=errors))
    session.commit()
