"""The `ingest` task: parse a stored upload, write its text and page map, count tokens.

Idempotent: a document already parsed or failed is left alone, and one being parsed
by a live worker is not touched. acks_late + reject_on_worker_lost hand the message
back if the worker dies; the heartbeat and `workers.sweeper` cover the case where the
broker cannot (a SIGKILLed worker on the embedded transport, or Redis's visibility
timeout still running).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from ingestion.documents.ocr import OCR_MODES, OcrOptions
from ingestion.documents.parse import open_document
from ingestion.documents.textfile import spans_to_json, write_pages
from ingestion.types import IngestError, PageText
from service.blobstore import BlobStore
from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.jobs.dispatch import send
from service.metrics.definitions import record_parse
from service.models import Document, DocumentStatus, DocumentTokenCount, Job, JobStatus, utcnow
from service.queue import INGEST_TASK, app
from workers.ingest import claims
from workers.ingest.token_counts import count_roles
from workers.task_options import durable_task, worker_name

log = logging.getLogger(__name__)


@app.task(  # type: ignore[untyped-decorator]
    **durable_task(INGEST_TASK)
)
def ingest(self: Any, document_id: str) -> dict[str, Any]:
    return run_ingest(uuid.UUID(document_id), worker_name(self), get_settings())


def run_ingest(document_id: uuid.UUID, worker: str, settings: Settings) -> dict[str, Any]:
    sessions = get_sessionmaker()
    with sessions() as session:
        claim = claims.claim(session, document_id, worker, settings.stale_after_s)
        if claim is None:
            doc = session.get(Document, document_id)
            state = doc.status.value if doc else "deleted"
            return {"document_id": str(document_id), "status": state, "skipped": True}
        if claim.attempt > settings.max_parse_attempts:
            reason = f"gave up after {claim.attempt - 1} attempts: each worker died mid-parse"
            _fail(session, claim, "worker_lost", reason)
            return {"document_id": str(document_id), "status": "failed"}
        doc = session.get(Document, document_id)
        assert doc is not None
        media_type, sha256 = doc.media_type, doc.sha256
        ocr_options = _ocr_options(settings, doc)

    store = BlobStore(settings.blobs)
    store.ensure()
    started = time.monotonic()
    with claims.Heartbeat(sessions, claim, settings.heartbeat_interval_s) as beat:
        try:
            outcome = _parse_and_count(
                store, document_id, media_type, sha256, settings, ocr_options, beat
            )
        except IngestError as err:
            code, reason = err.code, err.reason
        except SoftTimeLimitExceeded:
            code = "timeout"
            reason = f"parsing took longer than {settings.ingest_soft_time_limit_s} s"
        except OperationalError:
            raise  # the database is away: let Celery retry the task
        except Exception:
            log.exception("ingest of %s failed unexpectedly", document_id)
            # The traceback is in the log above; the tenant reads no exception text
            # (it can name server paths and internals).
            code = "internal_error"
            reason = "an internal error stopped the parse; the operators' worker log has it"
        else:
            record_parse(media_type, "parsed", time.monotonic() - started, len(outcome["spans"]))
            with sessions() as session:
                _finish_parsed(session, claim, store, outcome)
            _wake_jobs(document_id)
            return {"document_id": str(document_id), "status": "parsed"}
    record_parse(media_type, code, time.monotonic() - started, 0)
    with sessions() as session:
        _fail(session, claim, code, reason)
    _wake_jobs(document_id)
    return {"document_id": str(document_id), "status": "failed", "reason": reason}


def _wake_jobs(document_id: uuid.UUID) -> None:
    """Send the tasks of jobs that were created before their document was ready: they
    plan now (or fail with the parse error). Lost here, the sweeper sends them."""
    with get_sessionmaker()() as session:
        waiting = session.scalars(
            select(Job.id).where(Job.document_id == document_id, Job.status == JobStatus.queued)
        ).all()
        send(session, waiting)


def _ocr_options(settings: Settings, doc: Document) -> OcrOptions:
    """The settings' OCR, with what the upload asked for over them."""
    mode = next((m for m in OCR_MODES if m == doc.ocr_mode), settings.ocr_mode)
    return OcrOptions(
        mode=mode,
        languages=doc.ocr_languages,
        default_languages=settings.ocr_languages,
        max_pages=settings.ocr_max_pages_per_document,
        max_seconds=settings.ocr_max_seconds_per_document,
        dpi=settings.ocr_dpi,
        max_pixels=settings.ocr_max_pixels,
    )


def _parse_and_count(
    store: BlobStore,
    document_id: uuid.UUID,
    media_type: str,
    sha256: str,
    settings: Settings,
    ocr_options: OcrOptions,
    beat: claims.Heartbeat,
) -> dict[str, Any]:
    source = store.original(sha256)
    if not source.is_file():
        raise IngestError("corrupt", "the stored upload is missing from the blob store")
    final = store.path(store.text_key(document_id))
    fd, tmp = store.temp_file(prefix=f"{document_id}.txt.")
    os.close(fd)

    def on_page(page: PageText) -> None:
        beat.pages_done = page.number

    try:
        with open_document(
            source, media_type, max_pages=settings.max_pages, ocr_options=ocr_options
        ) as parsed:
            info = parsed.info
            with tmp.open("wb") as out:
                spans = write_pages(parsed.pages(), out, on_page=on_page)
        text_chars = spans[-1].char_end if spans else 0
        counts = count_roles(tmp, text_chars, settings)
        store.commit(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "info": info,
        "spans": spans,
        "counts": counts,
        "text_bytes": final.stat().st_size,
        "text_chars": text_chars,
    }


def _finish_parsed(session: Any, claim: claims.Claim, store: BlobStore, o: dict[str, Any]) -> None:
    info, spans = o["info"], o["spans"]
    warnings = [{"page": s.number, "warnings": list(s.warnings)} for s in spans if s.warnings]
    ok = claims.finish(
        session,
        claim,
        status=DocumentStatus.parsed,
        page_count=len(spans),
        pages_done=len(spans),
        title=info.title,
        author=info.author,
        language=info.language,
        text_key=store.text_key(claim.document_id),
        text_chars=o["text_chars"],
        text_bytes=o["text_bytes"],
        page_map=spans_to_json(spans),
        warnings=warnings,
        error_code=None,
        error_reason=None,
        parse_count=Document.parse_count + 1,
        parsed_at=utcnow(),
    )
    if not ok:
        log.warning("claim on %s was taken over; dropping this result", claim.document_id)
        session.rollback()
        if session.get(Document, claim.document_id) is None:
            # Deleted while we parsed: the text just put in place belongs to no one.
            store.delete(store.path(store.text_key(claim.document_id)))
        return
    session.query(DocumentTokenCount).filter_by(document_id=claim.document_id).delete()
    for role, tc in o["counts"].items():
        session.add(
            DocumentTokenCount(
                document_id=claim.document_id,
                role=role,
                count=tc.count,
                exact=tc.exact,
                tokenizer=tc.tokenizer,
                method=tc.method,
                model=tc.model,
            )
        )
    session.commit()


def _fail(session: Any, claim: claims.Claim, code: str, reason: str) -> None:
    claims.finish(
        session, claim, status=DocumentStatus.failed, error_code=code, error_reason=reason
    )
    session.commit()
