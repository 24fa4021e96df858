"""The OCR sweep: slices whose worker went silent, or whose message seems lost, are
sent again; scans whose last slice ended without sending the join get it.

Runs in every worker's main process beside the document sweeper
(`workers.schedule`). Each re-send is guarded by a conditional update of the
slice's `sent_at`, so several sweepers at once send one message; a duplicate
message is a no-op anyway, as the slice's claim decides who works.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import rows_changed
from service.models import Document, OcrPage, utcnow
from service.models.ocr import PENDING
from workers.ocr import store

log = logging.getLogger(__name__)
# As for documents (workers.sweeper): the broker redelivers what it holds; a slice
# nobody claimed for this long is taken to be lost with a worker's prefetch. Slices
# wait in the queue for as long as the scans before them take, so not sooner.
REQUEUE_AFTER = timedelta(hours=1)


def sweep_ocr(
    session: Session,
    settings: Settings,
    dispatch_slice: Callable[[str, int], None],
    dispatch_join: Callable[[str], None],
    *,
    tenant_id: uuid.UUID | None = None,
) -> int:
    """Send what needs sending; how many messages. With `tenant_id`, only that
    tenant's documents (a test in a shared database sweeps its own)."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    long_ago = now - REQUEUE_AFTER
    # Once for a silent holder (not sent since it claimed), then as for a lost message.
    silent = and_(
        OcrPage.claimed_at < stale,
        or_(OcrPage.sent_at < OcrPage.claimed_at, OcrPage.sent_at < long_ago),
    )
    lost = and_(OcrPage.claimed_at.is_(None), OcrPage.sent_at < long_ago)
    due = (
        select(OcrPage.document_id, OcrPage.slice)
        .where(OcrPage.status == PENDING, OcrPage.slice > 0, or_(silent, lost))
        .distinct()
        .limit(500)
    )
    if tenant_id is not None:
        mine = select(Document.id).where(Document.tenant_id == tenant_id)
        due = due.where(OcrPage.document_id.in_(mine))
    sent = 0
    for document_id, slice_no in session.execute(due).all():
        taken = session.execute(
            update(OcrPage)
            .where(
                OcrPage.document_id == document_id,
                OcrPage.slice == slice_no,
                OcrPage.status == PENDING,
                or_(silent, lost),
            )
            .values(sent_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if rows_changed(taken):
            dispatch_slice(str(document_id), slice_no)
            sent += 1
    sent += _unjoined(session, dispatch_join, tenant_id)
    if sent:
        log.warning("OCR sweep sent %d message(s)", sent)
    return sent


def _unjoined(
    session: Session, dispatch_join: Callable[[str], None], tenant_id: uuid.UUID | None
) -> int:
    """Scans with no page pending and no join sent: their last slice task stopped
    between recording its last page and sending the join."""
    pending = exists().where(OcrPage.document_id == Document.id, OcrPage.status == PENDING)
    due = select(Document.id).where(store.in_slice_phase(), ~pending).limit(500)
    if tenant_id is not None:
        due = due.where(Document.tenant_id == tenant_id)
    sent = 0
    for document_id in session.scalars(due).all():
        if store.take_join(session, document_id):
            dispatch_join(str(document_id))
            sent += 1
    return sent
