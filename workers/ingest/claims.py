"""Who is parsing which document: claims, heartbeats and conditional finishes.

A claim is the pair (document, attempt number). Every write a worker makes after
claiming is conditional on that attempt still being the current one, so a worker
that was presumed dead and comes back can never overwrite its successor's work.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.db import rows_changed
from service.models import Document, DocumentStatus, utcnow
from service.periodic import heartbeat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    document_id: uuid.UUID
    attempt: int
    worker: str


def silent_parse(stale: datetime) -> ColumnElement[bool]:
    """Parsing, but its worker has not beaten since `stale`: presumed dead. The claim
    and the sweeper must agree on this, so both use this one expression."""
    return and_(
        Document.status == DocumentStatus.parsing,
        or_(Document.heartbeat_at.is_(None), Document.heartbeat_at < stale),
        # A scan whose pages are out on the `ocr` queue has no parser to be silent
        # (workers.ocr.recovery watches its slices); once its join is sent it has.
        or_(Document.ocr_pages_total.is_(None), Document.ocr_join_sent_at.is_not(None)),
    )


def claim(
    session: Session, document_id: uuid.UUID, worker: str, stale_after_s: float
) -> Claim | None:
    """Take the document if it is queued, or parsing under a silent worker."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_after_s)
    result = session.execute(
        update(Document)
        .where(
            Document.id == document_id,
            or_(Document.status == DocumentStatus.queued, silent_parse(stale)),
        )
        .values(
            status=DocumentStatus.parsing,
            attempts=Document.attempts + 1,
            worker=worker,
            heartbeat_at=now,
            parse_started_at=now,
            pages_done=0,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if rows_changed(result) != 1:
        return None
    attempt = session.scalar(select(Document.attempts).where(Document.id == document_id))
    assert attempt is not None
    return Claim(document_id, attempt, worker)


def finish(session: Session, c: Claim, **values: Any) -> bool:
    """Write the outcome if the claim is still current; the caller commits."""
    result = session.execute(
        update(Document)
        .where(
            Document.id == c.document_id,
            Document.attempts == c.attempt,
            Document.status == DocumentStatus.parsing,
        )
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return rows_changed(result) == 1


class Heartbeat:
    """A thread that tells the database, every interval, that the claim is alive and
    how many pages are done. It stops with the worker process, which is the point;
    a database error only skips a beat (logged), so an outage shorter than
    `stale_after_s` never makes the sweeper take a live parse away."""

    def __init__(self, sessions: sessionmaker[Session], c: Claim, interval_s: float) -> None:
        self._sessions = sessions
        self._claim = c
        self._beats = heartbeat("ingest heartbeat", interval_s, self.beat, log)
        self.pages_done = 0

    def __enter__(self) -> Heartbeat:
        self._beats.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._beats.stop()

    def beat(self) -> None:
        with self._sessions() as session:
            finish(session, self._claim, heartbeat_at=utcnow(), pages_done=self.pages_done)
            session.commit()
