"""The rows of a scan's OCR slices (service/models/ocr.py): written when the ingest
task plans them, claimed and filled by slice tasks, read by the join.

Every write a slice task makes is conditional on its claim (`claimed_by` and the
attempt it claimed), so a worker presumed dead that comes back cannot overwrite its
successor's pages. The join is sent once: by the conditional update of
`ocr_join_sent_at` that only succeeds when no page of the document is pending.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update
from sqlalchemy.orm import Session

from ingestion.documents.ocr import OcrResult
from service.db import rows_changed
from service.models import Document, DocumentStatus, OcrPage, utcnow
from service.models.ocr import DONE, PENDING


@dataclass(frozen=True)
class SliceClaim:
    document_id: uuid.UUID
    slice_no: int
    worker: str
    attempt: int
    pages: tuple[int, ...]
    languages: str


def write_plan(
    session: Session,
    document_id: uuid.UUID,
    slices: Sequence[Sequence[int]],
    skipped: Mapping[int, OcrResult],
    languages: str,
) -> None:
    """The rows of a planned scan: pending pages slice by slice, refused ones done.
    The caller commits, with the document's own change (`workers.ingest.ocr_phase`)."""
    session.execute(delete(OcrPage).where(OcrPage.document_id == document_id))
    now = utcnow()
    for number, result in skipped.items():
        session.add(_row(document_id, number, 0, languages, DONE, result, now))
    for slice_no, pages in enumerate(slices, start=1):
        for number in pages:
            session.add(_row(document_id, number, slice_no, languages, PENDING, None, now))


def _row(
    document_id: uuid.UUID,
    page: int,
    slice_no: int,
    languages: str,
    status: str,
    result: OcrResult | None,
    now: datetime,
) -> OcrPage:
    return OcrPage(
        document_id=document_id,
        page=page,
        slice=slice_no,
        status=status,
        languages=languages,
        text=result.text if result else None,
        warnings=list(result.warnings) if result else None,
        attempts=0,
        sent_at=now,
    )


def _slice(document_id: uuid.UUID, slice_no: int) -> ColumnElement[bool]:
    return and_(
        OcrPage.document_id == document_id,
        OcrPage.slice == slice_no,
        OcrPage.status == PENDING,
    )


def claim_slice(
    session: Session, document_id: uuid.UUID, slice_no: int, worker: str, stale: datetime
) -> SliceClaim | None:
    """Take a slice's pending pages if nobody holds them, or their holder has not
    beaten since `stale`; None when none is pending (done, or the document deleted)
    or a live worker holds them."""
    now = utcnow()
    result = session.execute(
        update(OcrPage)
        .where(
            _slice(document_id, slice_no),
            or_(OcrPage.claimed_at.is_(None), OcrPage.claimed_at < stale),
        )
        .values(attempts=OcrPage.attempts + 1, claimed_by=worker, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if rows_changed(result) == 0:
        return None
    rows = session.execute(
        select(OcrPage.page, OcrPage.attempts, OcrPage.languages)
        .where(_slice(document_id, slice_no), OcrPage.claimed_by == worker)
        .order_by(OcrPage.page)
    ).all()
    if not rows:
        return None
    attempt = max(r.attempts for r in rows)
    return SliceClaim(
        document_id, slice_no, worker, attempt, tuple(r.page for r in rows), rows[0].languages
    )


def _held(c: SliceClaim) -> ColumnElement[bool]:
    return and_(
        _slice(c.document_id, c.slice_no),
        OcrPage.claimed_by == c.worker,
        OcrPage.attempts == c.attempt,
    )


def record(session: Session, c: SliceClaim, page: int, result: OcrResult) -> bool:
    """A page's result, and one more page done on the document, if the claim still
    holds; the slice's other pages are claimed afresh (a beat per page)."""
    now = utcnow()
    done = session.execute(
        update(OcrPage)
        .where(_held(c), OcrPage.page == page)
        .values(status=DONE, text=result.text, warnings=list(result.warnings), claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    ok = rows_changed(done) == 1
    if ok:
        session.execute(
            update(Document)
            .where(Document.id == c.document_id)
            .values(ocr_pages_done=Document.ocr_pages_done + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        beat(session, c, commit=False)
    session.commit()
    return ok


def beat(session: Session, c: SliceClaim, *, commit: bool = True) -> None:
    """The slice's holder is alive."""
    session.execute(
        update(OcrPage)
        .where(_held(c))
        .values(claimed_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if commit:
        session.commit()


def release(session: Session, c: SliceClaim) -> None:
    """Let go of the slice's pending pages, for the next message to claim at once."""
    session.execute(
        update(OcrPage)
        .where(_held(c))
        .values(claimed_by=None, claimed_at=None, sent_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def fail_pending(session: Session, c: SliceClaim, warning: str) -> int:
    """The slice's pending pages end with `warning` and no text; how many did."""
    pending = session.scalars(select(OcrPage.page).where(_held(c))).all()
    for page in pending:
        record(session, c, page, OcrResult("", (warning,)))
    return len(pending)


def in_slice_phase() -> ColumnElement[bool]:
    """Parsing, with pages out on the `ocr` queue and their join not yet sent: nobody
    is parsing it, so a silent heartbeat is no sign of a dead worker."""
    return and_(
        Document.status == DocumentStatus.parsing,
        Document.ocr_pages_total.is_not(None),
        Document.ocr_join_sent_at.is_(None),
    )


def _pending(document_id: uuid.UUID) -> ColumnElement[bool]:
    return exists().where(OcrPage.document_id == document_id, OcrPage.status == PENDING)


def take_join(session: Session, document_id: uuid.UUID) -> bool:
    """True for the one caller that may send the join: every page is done and no
    join was sent yet. The document becomes claimable by the ingest task at once
    (no heartbeat) and is marked sent, so the sweeper waits before sending another."""
    now = utcnow()
    result = session.execute(
        update(Document)
        .where(Document.id == document_id, in_slice_phase(), ~_pending(document_id))
        .values(ocr_join_sent_at=now, heartbeat_at=None, dispatched_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return rows_changed(result) == 1


def results(session: Session, document_id: uuid.UUID) -> dict[int, OcrResult] | None:
    """Every page's result, or None while a page is still pending."""
    if session.scalar(select(_pending(document_id))):
        return None
    rows = session.execute(
        select(OcrPage.page, OcrPage.text, OcrPage.warnings).where(
            OcrPage.document_id == document_id
        )
    ).all()
    return {r.page: OcrResult(r.text or "", tuple(r.warnings or ())) for r in rows}


def clear(session: Session, document_id: uuid.UUID) -> None:
    """The slices' rows, once their text is in the document's; the caller commits."""
    session.execute(delete(OcrPage).where(OcrPage.document_id == document_id))
