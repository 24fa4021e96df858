"""The `ingest` task: parse a stored upload, write its text and page map, count tokens.

Idempotent: a document already parsed or failed is left alone, and one being parsed
by a live worker is not touched. acks_late + reject_on_worker_lost hand the message
back if the worker dies; the heartbeat and `workers.sweeper` cover the case where the
broker cannot (a SIGKILLed worker on the embedded transport, or Redis's visibility
timeout still running).
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from ingestion.documents.ocr import OcrOptions, OcrResult
from ingestion.documents.ocr_slice import OcrPlan
from ingestion.documents.parse import open_document
from ingestion.documents.textfile import spans_to_json, write_pages
from ingestion.types import IngestError, PageText
from service.blobstore import BlobStore
from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.jobs.dispatch import send
from service.metrics.definitions import record_parse
from service.models import Document, DocumentStatus, DocumentTokenCount, Job, JobStatus, utcnow
from service.ocr_options import ocr_options
from service.queue import INGEST_TASK, app
from workers.ingest import claims, ocr_phase
from workers.ingest.token_counts import count_roles
from workers.ocr import store as ocr_store
from workers.task_options import durable_task, worker_name

log = logging.getLogger(__name__)


@app.task(  # type: ignore[untyped-decorator]
    **durable_task(INGEST_TASK)
)
def ingest(self: Any, document_id: str) -> dict[str, Any]:
    return run_ingest(uuid.UUID(document_id), worker_name(self), get_settings())


def run_ingest(document_id: uuid.UUID, worker: str, settings: Settings) -> dict[str, Any]:
    sessions = get_sessionmaker()
    out: dict[str, Any] = {"document_id": str(document_id)}
    with sessions() as session:
        job = _start(session, document_id, worker, settings)
    if not isinstance(job, _Parse):
        return {**out, **job}
    claim, media_type = job.claim, job.media_type
    store = BlobStore(settings.blobs)
    store.ensure()
    started = time.monotonic()
    to_slice: tuple[OcrPlan, ocr_phase.WantsOcr] | None = None
    with claims.Heartbeat(sessions, claim, settings.heartbeat_interval_s) as beat:
        try:
            outcome = _read(job, store, settings, sessions, beat)
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
            if isinstance(outcome, tuple):
                to_slice = outcome
            else:
                pages = len(outcome["spans"])
                record_parse(media_type, "parsed", time.monotonic() - started, pages)
                with sessions() as session:
                    _finish_parsed(session, claim, store, outcome)
                _wake_jobs(document_id)
                return {**out, "status": "parsed"}
    if to_slice is not None:
        # After the heartbeat stopped: its last beat must not land on a join that the
        # slices, quick as they may be, have sent meanwhile.
        return ocr_phase.send_slices(sessions, claim, settings, *to_slice, out)
    record_parse(media_type, code, time.monotonic() - started, 0)
    with sessions() as session:
        _fail(session, claim, code, reason)
    _wake_jobs(document_id)
    return {**out, "status": "failed", "reason": reason}


@dataclass(frozen=True)
class _Parse:
    """A claimed document, and what its parse needs to know."""

    claim: claims.Claim
    media_type: str
    sha256: str
    tenant_id: uuid.UUID
    ocr_options: OcrOptions
    # The slices' results, for the join of a scan OCR'd in slices; else None.
    ocr_results: dict[int, OcrResult] | None


def _start(
    session: Any, document_id: uuid.UUID, worker: str, settings: Settings
) -> _Parse | dict[str, Any]:
    """The claimed document, or what the task answers without parsing."""
    claim = claims.claim(session, document_id, worker, settings.stale_after_s)
    doc = session.get(Document, document_id)
    if claim is None:
        return {"status": doc.status.value if doc else "deleted", "skipped": True}
    assert doc is not None
    # A scan OCR'd in slices is read twice (before and after its slices): the join
    # is one more attempt, not a sign of dying workers.
    sliced = doc.ocr_pages_total is not None
    if claim.attempt > settings.max_parse_attempts + sliced:
        reason = f"gave up after {claim.attempt - 1} attempts: each worker died mid-parse"
        _fail(session, claim, "worker_lost", reason)
        return {"status": "failed"}
    results = ocr_store.results(session, document_id) if sliced else None
    if sliced and results is None:
        # Only the last slice sends the join (ocr_store.take_join): nothing else may
        # read the document while a page is out. Handed back to its slices.
        claims.finish(session, claim, ocr_join_sent_at=None, heartbeat_at=None)
        session.commit()
        return {"status": "parsing", "skipped": True}
    options = ocr_options(settings, doc.ocr_mode, doc.ocr_languages)
    return _Parse(claim, doc.media_type, doc.sha256, doc.tenant_id, options, results)


def _read(
    job: _Parse, store: BlobStore, settings: Settings, sessions: Any, beat: claims.Heartbeat
) -> dict[str, Any] | tuple[OcrPlan, ocr_phase.WantsOcr]:
    """The parsed outcome, with OCR'd pages; or the OCR plan of a scan whose pages
    go out in slices."""
    read = functools.partial(
        _parse_and_count,
        store, job.claim.document_id, job.media_type, job.sha256, settings, job.ocr_options,
    )  # fmt: skip
    outcome = read(job.ocr_results, beat)
    if not isinstance(outcome, ocr_phase.WantsOcr):
        return outcome
    with sessions() as session:
        planned = ocr_phase.plan(
            session, settings, job.tenant_id, outcome.pages, outcome.languages, job.ocr_options
        )
    if len(planned.recognise) > settings.ocr_inline_max_pages:
        return planned, outcome
    source = store.original(job.sha256)
    results = ocr_phase.recognise_here(
        source, job.media_type, planned, outcome.languages, job.ocr_options
    )
    final = read(results, beat)
    assert not isinstance(final, ocr_phase.WantsOcr)  # with results, no page is left wanting
    return final


def _wake_jobs(document_id: uuid.UUID) -> None:
    """Send the tasks of jobs that were created before their document was ready: they
    plan now (or fail with the parse error). Lost here, the sweeper sends them."""
    with get_sessionmaker()() as session:
        waiting = session.scalars(
            select(Job.id).where(Job.document_id == document_id, Job.status == JobStatus.queued)
        ).all()
        send(session, waiting)


def _parse_and_count(
    store: BlobStore,
    document_id: uuid.UUID,
    media_type: str,
    sha256: str,
    settings: Settings,
    ocr_options: OcrOptions,
    results: Mapping[int, OcrResult] | None,
    beat: claims.Heartbeat,
) -> dict[str, Any] | ocr_phase.WantsOcr:
    """Read the document; with OCR on and no `results`, pages that want it are
    only found (`ocr_phase.WantsOcr`), for the caller to plan, and the text is dropped."""
    source = store.original(sha256)
    if not source.is_file():
        raise IngestError("corrupt", "the stored upload is missing from the blob store")
    finding = results is None and ocr_options.mode != "off"
    final = store.path(store.text_key(document_id))
    fd, tmp = store.temp_file(prefix=f"{document_id}.txt.")
    os.close(fd)

    def on_page(page: PageText) -> None:
        beat.pages_done = page.number

    try:
        with open_document(
            source,
            media_type,
            max_pages=settings.max_pages,
            ocr_options=ocr_options,
            ocr_results={} if finding else results,
        ) as parsed:
            info = parsed.info
            with tmp.open("wb") as out:
                spans = write_pages(parsed.pages(), out, on_page=on_page)
            wanted, languages = parsed.pages_wanting_ocr(), parsed.ocr_languages
        if finding and wanted and languages:
            return ocr_phase.WantsOcr(wanted, languages, len(spans))
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
    ocr_store.clear(session, claim.document_id)
    session.commit()


def _fail(session: Any, claim: claims.Claim, code: str, reason: str) -> None:
    if claims.finish(
        session, claim, status=DocumentStatus.failed, error_code=code, error_reason=reason
    ):
        ocr_store.clear(session, claim.document_id)
    session.commit()
