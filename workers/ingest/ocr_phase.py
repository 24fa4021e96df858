"""What the ingest task does with the pages that want OCR, once a first read without
OCR has found them (`ParsedDocument.pages_wanting_ocr`).

`plan` applies what stops a page from being recognised: no Tesseract or language
(then no page is), the page cap per document, the tenant's daily cap
(`workers.ocr.quota`). A few pages are then recognised here (`recognise_here`);
more are written as slices (`start_slices`) for the `ocr` queue's workers, and the
ingest task ends, leaving the document `parsing`; the last slice sends the ingest
task again, which reads the document with the slices' results (the join).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ingestion.documents import ocr
from ingestion.documents.ocr_slice import OcrPlan, cap, recognise_pages, refused, slices
from service.config import Settings
from service.models import utcnow
from service.queue import dispatch_ocr_slice
from workers.ingest import claims
from workers.ocr import quota, store


@dataclass(frozen=True)
class WantsOcr:
    """A first read found pages that want OCR; nothing was stored."""

    pages: tuple[int, ...]
    languages: str
    page_count: int


def plan(
    session: Session,
    settings: Settings,
    tenant_id: uuid.UUID,
    wanted: Sequence[int],
    languages: str,
    options: ocr.OcrOptions,
) -> OcrPlan:
    """Which of the `wanted` pages are recognised, and why the others are not."""
    problem = ocr.unavailable(languages, options)
    if problem is not None:
        return OcrPlan((), refused(wanted, problem))
    per_document = settings.ocr_max_pages_per_document
    planned = cap(OcrPlan(tuple(wanted)), per_document, f"page cap {per_document} reached")
    daily = settings.ocr_max_pages_per_tenant_day
    granted = quota.grant(session, tenant_id, len(planned.recognise), daily, utcnow())
    return cap(planned, granted, f"daily OCR cap of {daily} pages for this tenant reached")


def recognise_here(
    source: Path, media_type: str, planned: OcrPlan, languages: str, options: ocr.OcrOptions
) -> dict[int, ocr.OcrResult]:
    """Every wanted page's result, the planned ones recognised in this process."""
    results = dict(planned.skipped)
    results.update(
        recognise_pages(
            source, media_type, planned.recognise, languages, options,
            max_seconds=options.max_seconds,
        )
    )  # fmt: skip
    return results


def start_slices(
    session: Session,
    claim: claims.Claim,
    planned: OcrPlan,
    languages: str,
    page_count: int,
    settings: Settings,
) -> int:
    """Write the slices and hand the document over to them; how many slices (0: the
    claim was taken over meanwhile, nothing was written). The caller sends them."""
    parts = slices(planned.recognise, settings.ocr_slice_pages)
    store.write_plan(session, claim.document_id, parts, planned.skipped, languages)
    handed = claims.finish(
        session,
        claim,
        page_count=page_count,
        pages_done=page_count,
        ocr_pages_total=len(planned.recognise),
        ocr_pages_done=0,
        ocr_join_sent_at=None,
        worker=None,
    )
    if not handed:
        session.rollback()
        return 0
    session.commit()
    return len(parts)


def send_slices(
    sessions: sessionmaker[Session],
    claim: claims.Claim,
    settings: Settings,
    planned: OcrPlan,
    wants: WantsOcr,
    out: dict[str, Any],
) -> dict[str, Any]:
    """Write the slices, hand the document to them, and send them."""
    with sessions() as session:
        count = start_slices(session, claim, planned, wants.languages, wants.page_count, settings)
    for slice_no in range(1, count + 1):
        dispatch_ocr_slice(str(claim.document_id), slice_no)
    return {**out, "status": "parsing", "ocr_pages": len(planned.recognise), "slices": count}
