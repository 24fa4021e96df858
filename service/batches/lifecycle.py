"""Batches behind the router and the worker: look up, list, count, cancel, and move
on (finalizing, completed, cancelled, expired)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from service.batches import outputs
from service.batches import status as rules
from service.blobstore import BlobStore
from service.config import get_settings
from service.db import get_sessionmaker, write_transaction
from service.errors import NotFound
from service.jobs import tree
from service.models import (
    BATCH_FINAL,
    FINAL,
    Batch,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    Job,
    JobStatus,
    utcnow,
)
from service.webhooks import outbox

log = logging.getLogger(__name__)
PREFIX = "batch_"
_RETRIED = (BatchStatus.failed, BatchStatus.cancelled, BatchStatus.expired)
# Output lines written per step: a worker's advance, or the API's cancel (which the
# worker's next advances finish, the batch `cancelling` until then).
STEP_LINES = 5_000
CANCEL_LINES = 500


def _store(store: BlobStore | None) -> BlobStore:
    return store if store is not None else BlobStore(get_settings().blobs)


def public_id(batch_id: uuid.UUID) -> str:
    return PREFIX + batch_id.hex


def parse_id(text: str) -> uuid.UUID:
    """`batch_<hex>` as a uuid; NotFound for anything else (no id leaks a format)."""
    try:
        if not text.startswith(PREFIX) or len(text) != len(PREFIX) + 32:
            raise ValueError(text)
        return uuid.UUID(hex=text[len(PREFIX) :])
    except ValueError:
        raise NotFound("not_found", "batch not found") from None


def get_owned(session: Session, tenant_id: uuid.UUID, text: str) -> Batch:
    batch = session.get(Batch, parse_id(text))
    if batch is None or batch.tenant_id != tenant_id:
        raise NotFound("not_found", "batch not found")
    return batch


def reusable(session: Session, tenant_id: uuid.UUID, key: str) -> Batch | None:
    """The batch this dedup key names, or None. One that ended badly gives its key up
    (renamed `key@id`, in the caller's transaction) to the batch that retries it."""
    found = session.scalar(
        select(Batch).where(Batch.tenant_id == tenant_id, Batch.dedup_key == key)
    )
    if found is None or found.status not in _RETRIED:
        return found
    found.dedup_key = f"{key}@{found.id.hex}"
    session.flush()
    return None


def counts(session: Session, batch: Batch) -> rules.Counts:
    """The batch's requests by effective status, counted by the database (one row per
    item status, job status and job error code), not item by item."""
    rows = session.execute(
        select(BatchItem.status, Job.status, Job.error_code, func.count())
        .outerjoin(Job, Job.id == BatchItem.job_id)
        .where(BatchItem.batch_id == batch.id)
        .group_by(BatchItem.status, Job.status, Job.error_code)
    ).all()
    groups = ((rules.effective(r[0], r[1], r[2]), int(r[3])) for r in rows)
    return rules.count(groups, batch.total)


def _end_unfinished(
    session: Session, batch_id: uuid.UUID, code: str, reason: str, item_status: BatchItemStatus
) -> list[str]:
    """End the batch's unfinished jobs (`cancelled`, with `code`), and mark its items
    without a job `item_status`. Returns the Celery task ids to revoke."""
    live = session.execute(
        select(Job.id, Job.task_id)
        .join(BatchItem, BatchItem.job_id == Job.id)
        .where(BatchItem.batch_id == batch_id, Job.status.not_in(FINAL))
    ).all()
    moved = tree.end_tree(
        session, [j.id for j in live], JobStatus.cancelled, utcnow(), code=code, reason=reason
    )
    pending = BatchItem.status.in_((BatchItemStatus.pending, BatchItemStatus.queued))
    stmt = update(BatchItem).where(
        BatchItem.batch_id == batch_id, BatchItem.job_id.is_(None), pending
    )
    session.execute(stmt.values(status=item_status, error_code=code, error_reason=reason))
    tasks = [j.task_id for j in live if j.task_id]
    if moved:
        extra = session.scalars(select(Job.task_id).where(Job.id.in_(moved))).all()
        tasks += [t for t in extra if t and t not in tasks]
    return tasks


def _move(batch: Batch, to: BatchStatus, now: datetime) -> None:
    batch.status = to
    column = rules.stamp(to)
    if column is not None:
        setattr(batch, column, now)
    session = object_session(batch)
    if to in BATCH_FINAL and session is not None:
        outbox.batch_ended(session, batch, public_id(batch.id), now)  # in the move's transaction


def _keep_counts(batch: Batch, found: rules.Counts) -> None:
    batch.total, batch.completed, batch.failed = found.total, found.completed, found.failed


def cancel(session: Session, batch: Batch, store: BlobStore | None = None) -> list[str]:
    """Stop what has not finished and keep what has: cancelling, then cancelled once
    every item is final, its line written and the expansion stopped. Returns task
    ids to revoke."""
    if batch.status in BATCH_FINAL or batch.status == BatchStatus.cancelling:
        return []
    blobs = _store(store)
    with write_transaction(session):
        now = utcnow()
        # A batch whose requests all ended before the advancer saw it is completed,
        # not cancelled: a cancel changes nothing that has finished.
        session.refresh(batch, with_for_update=True)
        _settle(session, blobs, batch, now, CANCEL_LINES)
        if batch.status in BATCH_FINAL or batch.status == BatchStatus.finalizing:
            return []
        _move(batch, BatchStatus.cancelling, now)
        tasks = _end_unfinished(
            session,
            batch.id,
            "cancelled",
            "cancelled with its batch",
            BatchItemStatus.cancelled,
        )
        _settle(session, blobs, batch, now, CANCEL_LINES)
    session.refresh(batch)
    return tasks


def _settle(session: Session, store: BlobStore, batch: Batch, now: datetime, lines: int) -> None:
    """Write up to `lines` output lines, and move the batch as far as its items and
    its files allow (in the caller's transaction)."""
    outputs.write(session, store, batch, lines)
    found = counts(session, batch)
    _keep_counts(batch, found)
    expanded = batch.expanded_at is not None
    written = outputs.unwritten(session, batch.id) == 0
    while (to := rules.next_status(batch.status, expanded, found, written)) is not None:
        _move(batch, to, now)
    if batch.status in BATCH_FINAL:
        outputs.seal(session, store, batch)


def _expire(session: Session, store: BlobStore, batch: Batch, now: datetime) -> list[str]:
    """Its unfinished requests ended `expired`; the batch is `expired` once their
    lines are written too (until then it stays as it is, and the next step goes on)."""
    tasks = _end_unfinished(
        session,
        batch.id,
        rules.EXPIRED_CODE,
        f"its batch's completion window ({batch.completion_window}) passed",
        BatchItemStatus.expired,
    )
    outputs.write(session, store, batch, STEP_LINES)
    _keep_counts(batch, counts(session, batch))
    if outputs.unwritten(session, batch.id) == 0:
        _move(batch, BatchStatus.expired, now)
        outputs.seal(session, store, batch)
    return tasks


def advance_one(
    session: Session, batch_id: uuid.UUID, now: datetime, store: BlobStore | None = None
) -> list[str]:
    """One batch moved on: the lines of requests that ended written, expired past its
    window, stragglers of a cancel ended, finalizing and completed once all is final
    and written. Returns task ids to revoke."""
    tasks: list[str] = []
    blobs = _store(store)
    with write_transaction(session):
        batch = session.get(Batch, batch_id, with_for_update=True)
        if batch is None or batch.status in BATCH_FINAL:
            return []
        if rules.is_expired(batch.status, batch.expires_at, now):
            tasks = _expire(session, blobs, batch, now)
        else:
            if batch.status == BatchStatus.cancelling:
                # Jobs the expansion made after the cancel ended the others.
                tasks = _end_unfinished(
                    session, batch.id, "cancelled", "cancelled with its batch",
                    BatchItemStatus.cancelled,
                )  # fmt: skip
            _settle(session, blobs, batch, now, STEP_LINES)
    return tasks


# The API sends a batch's expansion right after creating it; one still validating after
# this long lost its message (the API could not reach the broker), and is sent again.
UNSENT_AFTER = timedelta(seconds=60)


def advance_all(
    sessions: Callable[[], Session],
    revoke: Callable[[Sequence[str]], None],
    dispatch_expand: Callable[[str], None] | None = None,
    store: BlobStore | None = None,
) -> int:
    """The worker's periodic step over every batch not final; returns how many."""
    with sessions() as session:
        ids = list(session.scalars(select(Batch.id).where(Batch.status.not_in(BATCH_FINAL))))
        # Sent again at most once a window, from the last sending: a request file's
        # validation (or a long queue) keeps a batch validating longer than that,
        # and every step would send it once more.
        cutoff = utcnow() - UNSENT_AFTER
        unsent = list(
            session.scalars(
                select(Batch.id).where(
                    Batch.status == BatchStatus.validating,
                    Batch.in_progress_at.is_(None),
                    func.coalesce(Batch.resent_at, Batch.created_at) < cutoff,
                )
            )
        )
        if unsent and dispatch_expand is not None:
            stmt = update(Batch).where(Batch.id.in_(unsent)).values(resent_at=utcnow())
            session.execute(stmt)
            session.commit()
    if dispatch_expand is not None:
        for batch_id in unsent:
            dispatch_expand(str(batch_id))  # a second run skips the items made
    for batch_id in ids:
        with sessions() as session:
            revoke(advance_one(session, batch_id, utcnow(), store))
    return len(ids)


def final_items(
    session: Session, batch_id: uuid.UUID, after_line: int, limit: int
) -> list[tuple[BatchItem, Job | None, str]]:
    """The next `limit` items past `after_line` whose status is final, in line order,
    each with its job and its effective status."""
    out: list[tuple[BatchItem, Job | None, str]] = []
    line = after_line
    while len(out) < limit:
        rows = session.execute(
            select(BatchItem, Job)
            .outerjoin(Job, Job.id == BatchItem.job_id)
            .where(BatchItem.batch_id == batch_id, BatchItem.line > line)
            .order_by(BatchItem.line)
            .limit(limit)
        ).all()
        if not rows:
            break
        for item, job in rows:
            line = item.line
            state = rules.effective(
                item.status, job.status if job else None, job.error_code if job else None
            )
            if state in rules.ITEM_FINAL:
                out.append((item, job, state))
    return out


def final_pages(
    batch_id: uuid.UUID, size: int
) -> Iterator[tuple[Session, list[tuple[BatchItem, Job | None, str]]]]:
    """The batch's final items page by page in line order (`final_items`), each page
    with the session it was read in: one of their own, as a results response streams
    them after the request's session is gone."""
    after = 0
    with get_sessionmaker()() as session:
        while page := final_items(session, batch_id, after, size):
            yield session, page
            after = page[-1][0].line
            session.rollback()
