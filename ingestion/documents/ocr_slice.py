"""A long scan's OCR as independent pieces: which pages get it, in what slices, and
the recognition of one slice by itself.

The worker reads a document once without OCR and learns which pages want it
(`ParsedDocument.pages_wanting_ocr`). `cap` decides which of those are recognised
under the page caps, with a reason for the others; `slices` cuts the recognised ones
into slices that workers take in parallel; `recognise_pages` OCRs one slice's pages
from the stored file, opening it afresh, so any worker can take any slice. The
results, keyed by page number, are then given to `open_document(ocr_results=...)`,
which reads the document once more with them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingestion.documents import ocr
from ingestion.documents.mupdf_doc import open_mupdf
from ingestion.documents.pagetext import OCR_FAILED, first_line
from ingestion.types import passes_through


@dataclass(frozen=True)
class OcrPlan:
    """The pages to recognise, in order, and a result for each page that is not."""

    recognise: tuple[int, ...]
    skipped: dict[int, ocr.OcrResult] = field(default_factory=dict)


def refused(pages: Sequence[int], reason: str) -> dict[int, ocr.OcrResult]:
    """The result of pages that are not recognised, each saying `reason`."""
    result = ocr.OcrResult("", (ocr.skipped(reason),))
    return dict.fromkeys(pages, result)


def cap(plan: OcrPlan, most: int, reason: str) -> OcrPlan:
    """`plan` with at most `most` pages left to recognise; the rest say `reason`."""
    kept, over = plan.recognise[:most], plan.recognise[most:]
    return OcrPlan(kept, {**plan.skipped, **refused(over, reason)})


def slices(pages: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """`pages` in runs of at most `size`, in order."""
    if size < 1:
        raise ValueError(f"a slice holds at least one page, not {size}")
    return [tuple(pages[i : i + size]) for i in range(0, len(pages), size)]


def recognise_pages(
    path: Path,
    media_type: str,
    pages: Sequence[int],
    languages: str,
    options: ocr.OcrOptions,
    *,
    max_seconds: float | None = None,
) -> Iterator[tuple[int, ocr.OcrResult]]:
    """(page number, result) for each of `pages` of the file, recognised in
    `languages`, as each is done (a caller records progress per page). Never raises
    for a page: one that cannot be loaded says ``ocr_failed``. Past `max_seconds` of
    recognition, the rest say ``ocr_skipped: time budget``. Opening the file may
    raise `IngestError`, as any parse's."""
    doc = open_mupdf(path, media_type)
    spent = 0.0
    try:
        for number in pages:
            if max_seconds is not None and spent >= max_seconds:
                yield number, refused([number], f"time budget {max_seconds:g} s reached")[number]
                continue
            started = time.monotonic()
            yield number, _recognise_one(doc, number, languages, options)
            spent += time.monotonic() - started
    finally:
        doc.close()


def _recognise_one(doc: Any, number: int, languages: str, options: ocr.OcrOptions) -> ocr.OcrResult:
    try:
        page = doc.load_page(number - 1)
    except Exception as exc:  # MuPDF raises many kinds; the page says which
        if passes_through(exc):
            raise
        return ocr.OcrResult("", (f"{OCR_FAILED}: {first_line(exc)}",))
    return ocr.ocr_page(page, languages, options)
