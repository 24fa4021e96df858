"""The `ocr_slice` task: recognise one slice of a long scan's pages, page by page,
and send the join when it was the last.

Idempotent: a slice that is done, or held by a live worker, is left alone. Its
pages' rows are its claim; a heartbeat keeps it while Tesseract works. A slice whose
worker died (SIGKILL, out of memory, Celery's hard limit) is taken again, by the
broker's redelivery or by the sweeper (`workers.ocr.recovery`), up to
`ocr_slice_max_attempts`; then its pages end `ocr_failed` and the document goes on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from ingestion.documents.ocr import OcrOptions, OcrResult
from ingestion.documents.ocr_slice import recognise_pages
from ingestion.documents.pagetext import OCR_FAILED
from ingestion.types import IngestError
from service.blobstore import BlobStore
from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.metrics.definitions import record_ocr_pages
from service.models import Document, utcnow
from service.ocr_options import render_options
from service.periodic import heartbeat
from service.queue import OCR_TASK, app, dispatch_ingest, dispatch_ocr_slice
from workers.ocr import store
from workers.task_options import durable_task, worker_name

log = logging.getLogger(__name__)


@app.task(  # type: ignore[untyped-decorator]
    **durable_task(OCR_TASK)
)
def ocr_slice(self: Any, document_id: str, slice_no: int) -> dict[str, Any]:
    return run_slice(uuid.UUID(document_id), int(slice_no), worker_name(self), get_settings())


def run_slice(
    document_id: uuid.UUID,
    slice_no: int,
    worker: str,
    settings: Settings,
    dispatch_join: Callable[[str], None] = dispatch_ingest,
    dispatch_slice: Callable[[str, int], None] = dispatch_ocr_slice,
) -> dict[str, Any]:
    """Recognise the slice's pages, if it can be claimed; the join goes through
    `dispatch_join`, a slice sent again through `dispatch_slice`."""
    sessions = get_sessionmaker()
    out: dict[str, Any] = {"document_id": str(document_id), "slice": slice_no}
    stale = utcnow() - timedelta(seconds=settings.stale_after_s)
    with sessions() as session:
        claim = store.claim_slice(session, document_id, slice_no, worker, stale)
        if claim is None:
            join_if_done(session, document_id, dispatch_join)
            return {**out, "skipped": True}
        if claim.attempt > settings.ocr_slice_max_attempts:
            tries = claim.attempt - 1
            reason = (
                f"{OCR_FAILED}: gave up after {tries} attempts: the worker stopped"
                " or passed its time limit on this slice"
            )
            record_ocr_pages("failed", store.fail_pending(session, claim, reason))
            join_if_done(session, document_id, dispatch_join)
            return {**out, "status": "failed"}
        doc = session.get(Document, document_id)
        if doc is None:
            return {**out, "skipped": True}
        media_type, sha256 = doc.media_type, doc.sha256
    source = BlobStore(settings.blobs).original(sha256)
    # Which pages and in what languages were decided at planning; only the render and
    # the engine are the worker's settings', as for the pages recognised inline.
    options = render_options(settings)
    done = _recognise(sessions, claim, source, media_type, options, settings, dispatch_slice)
    out["pages"] = done
    with sessions() as session:
        join_if_done(session, document_id, dispatch_join)
    return out


def _recognise(
    sessions: sessionmaker[Session],
    claim: store.SliceClaim,
    source: Any,
    media_type: str,
    options: OcrOptions,
    settings: Settings,
    dispatch_slice: Callable[[str, int], None],
) -> int:
    """Recognise and record the claimed pages; how many this call recorded."""

    def beat() -> None:
        with sessions() as session:
            store.beat(session, claim)

    done = 0
    try:
        with heartbeat("ocr slice heartbeat", settings.heartbeat_interval_s, beat, log):
            pages = recognise_pages(source, media_type, claim.pages, claim.languages, options)
            for number, result in pages:
                with sessions() as session:
                    if not store.record(session, claim, number, result):
                        log.warning(
                            "slice %s of %s was taken over", claim.slice_no, claim.document_id
                        )
                        return done
                done += 1
                record_ocr_pages("recognised" if result.recognised else "failed", 1)
    except SoftTimeLimitExceeded:
        # The page in hand ran the slice past its limit: it fails, and the pages after
        # it go back on the queue as a fresh attempt.
        if done == len(claim.pages):
            return done  # the limit came after the last page was recorded: nothing is left
        limit = settings.ocr_slice_soft_time_limit_s
        with sessions() as session:
            page = claim.pages[done]
            warning = f"{OCR_FAILED}: the slice passed its time limit of {limit} s on this page"
            store.record(session, claim, page, OcrResult("", (warning,)))
            record_ocr_pages("failed", 1)
            store.release(session, claim)
        if done + 1 < len(claim.pages):
            dispatch_slice(str(claim.document_id), claim.slice_no)
    except IngestError as err:  # the stored file no longer opens
        with sessions() as session:
            record_ocr_pages(
                "failed", store.fail_pending(session, claim, f"{OCR_FAILED}: {err.reason}")
            )
    return done


def join_if_done(
    session: Session, document_id: uuid.UUID, dispatch_join: Callable[[str], None]
) -> bool:
    """Send the join (the ingest task, which reads the slices' results) if every page
    is done and nobody sent it yet."""
    if not store.take_join(session, document_id):
        return False
    dispatch_join(str(document_id))
    return True
