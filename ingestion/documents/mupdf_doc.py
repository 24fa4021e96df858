"""PDF, EPUB, XPS, FB2, MOBI, CBZ and HTML through PyMuPDF, one page at a time.

Only one ``Page`` is alive at a time, and whenever the process has grown by
`TRIM_GROWTH_BYTES` since the last trim, MuPDF's object store (decoded fonts,
images, content streams; up to 256 MB by default) is emptied and the PDF
objects parsed so far are dropped from the xref (``pdf_clear_xref``; objects
still in use are kept). Measured RSS from page 1 to the last page: the
930-page LilyPond notation manual grows from 75 to 270 MB untouched, to 121
MB with the store emptied alone; pgfplots (573 p) 97 -> 137 MB with the store
emptied, flat at 101 MB once the xref is cleared too; LaTeX3 sources (1,611
p) 112 -> 152 MB vs. flat at 115 MB. Trimming costs speed (every 32 pages:
the R reference parsed 1.45x slower than raw ``get_text``, as fonts are
decoded again), so it is driven by growth, not by a page count: a document
that does not grow is never trimmed. Where RSS cannot be read (not Linux),
trimming falls back to every `TRIM_EVERY_PAGES` pages. Reflowable formats (EPUB,
HTML, FB2, MOBI) are laid out whole by MuPDF at open; that is bounded by the
file size, not by us.

OCR (`ocr`, off unless asked for): pages of fixed-layout formats (PDF, XPS, CBZ)
that `ocr.wants_ocr`, one after the other, up to `OcrOptions.max_pages` and
`max_seconds` a document; or, given `ocr_results`, what was recognised elsewhere
(`ocr_slice`: the worker OCRs a long scan's pages in parallel slices, then reads the
document once more with their results). `pages_wanting_ocr` says which pages wanted
it. A reflowed page's images are illustrations of its text, not scans.

MuPDF sniffs content and ignores the requested type: a ZIP of any kind opens
as a blank "zip" image archive. Such results are refused, never returned as
an empty document.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pymupdf

from ingestion.documents import formats, ocr
from ingestion.documents import metadata as doc_metadata
from ingestion.documents.pagetext import (
    BLANK_PAGE,
    GRAPHICS_ONLY,
    NO_TEXT_LAYER,
    REPAIRED,
    UNMAPPED_GLYPHS,
    clean_text,
    failure_warning,
    has_unmapped_glyphs,
)
from ingestion.documents.parsed import ParsedDocument, check_page_count
from ingestion.types import DocumentInfo, IngestError, PageText, passes_through

# Checked every few pages; /proc/self/statm is one small read.
CHECK_EVERY = 16
TRIM_GROWTH_BYTES = 4 * 2**20
TRIM_EVERY_PAGES = 64
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


# PyMuPDF's functions are unannotated; strict mypy would refuse every call.
_pymupdf: Any = pymupdf

FILETYPES: dict[str, str] = {
    formats.PDF: "pdf",
    formats.EPUB: "epub",
    formats.XPS: "xps",
    formats.FB2: "fb2",
    formats.MOBI: "mobi",
    formats.CBZ: "cbz",
    formats.HTML: "html",
}

# MuPDF's name for the format it actually used, per requested media type.
_EXPECTED_FORMAT: dict[str, tuple[str, ...]] = {
    formats.PDF: ("PDF",),
    formats.EPUB: ("EPUB",),
    formats.XPS: ("XPS",),
    formats.FB2: ("FictionBook",),
    formats.CBZ: ("zip", "CBZ"),
    formats.HTML: ("HTML", "XHTML"),
}

_FIXED_LAYOUT = frozenset({formats.PDF, formats.XPS, formats.CBZ})


def _meta_value(metadata: dict[str, Any] | None, key: str) -> str | None:
    value = (metadata or {}).get(key)
    if not isinstance(value, str):
        return None
    value = clean_text(value).strip()
    return value or None


def open_mupdf(path: Path, media_type: str) -> Any:
    """The PyMuPDF document, or an `IngestError` saying why it cannot be opened."""
    try:
        doc = _pymupdf.open(str(path), filetype=FILETYPES[media_type])
    except pymupdf.EmptyFileError as exc:
        raise IngestError("empty", "the file is empty (0 bytes)") from exc
    except (RuntimeError, ValueError) as exc:
        # FileDataError and MuPDF's other failures are RuntimeErrors.
        raise IngestError("corrupt", f"cannot open the file: {exc}") from exc
    return doc


def _check_format(doc: Any, media_type: str) -> None:
    fmt = str((doc.metadata or {}).get("format") or "")
    if fmt == "zip" and media_type != formats.CBZ:
        raise IngestError(
            "unsupported_type", f"the file is a ZIP archive that is not a readable {media_type}"
        )
    expected = _EXPECTED_FORMAT.get(media_type)
    if expected and fmt and not fmt.startswith(expected):
        raise IngestError(
            "corrupt", f"the file is not a valid {media_type} (MuPDF read it as {fmt})"
        )


def _language(doc: Any, path: Path, media_type: str) -> str | None:
    if media_type == formats.PDF:
        lang = doc.language
        return str(lang) if lang else None
    if media_type == formats.EPUB:
        return doc_metadata.epub_language(path)
    if media_type == formats.HTML:
        return doc_metadata.html_language(path)
    if media_type == formats.FB2:
        return doc_metadata.fb2_language(path)
    return None


def _empty_page_kind(page: Any) -> str | None:
    """Why a page has no text, from what its drawing operations are."""
    try:
        ops = {kind for kind, _bbox in page.get_bboxlog()}
    except (RuntimeError, ValueError):
        return BLANK_PAGE
    if any("image" in op or "imgmask" in op for op in ops):
        return NO_TEXT_LAYER
    if any(op.endswith("-path") and not op.startswith("clip") for op in ops):
        return GRAPHICS_ONLY
    if any(op.endswith("-text") for op in ops):
        return None  # text is drawn but does not extract: left to unmapped_glyphs
    return BLANK_PAGE


class MuPDFDocument(ParsedDocument):
    def __init__(
        self,
        path: Path,
        media_type: str,
        *,
        max_pages: int,
        ocr_options: ocr.OcrOptions = ocr.OFF,
        ocr_results: Mapping[int, ocr.OcrResult] | None = None,
    ) -> None:
        self._doc = open_mupdf(path, media_type)
        try:
            _check_format(self._doc, media_type)
            if self._doc.needs_pass:
                raise IngestError("encrypted", "the document is encrypted and needs a password")
            try:
                count = int(self._doc.page_count)
            except RuntimeError as exc:
                raise IngestError("corrupt", f"cannot read the page tree: {exc}") from exc
            if count == 0 and self._doc.is_repaired:
                # A truncated or mangled file, not a document that is empty on purpose.
                raise IngestError("corrupt", "the file is damaged and no page could be recovered")
            check_page_count(count, max_pages)
            metadata = self._doc.metadata
            self.info = DocumentInfo(
                media_type=media_type,
                page_count=count,
                title=_meta_value(metadata, "title"),
                author=_meta_value(metadata, "author"),
                language=_language(self._doc, path, media_type),
            )
            fixed = media_type in _FIXED_LAYOUT
            self._ocr = ocr_options if fixed else ocr.OFF
            self._languages = ocr.resolve_languages(self._ocr, self.info.language)
            self.ocr_languages = self._languages
            self._results = ocr_results
            self._wanted: list[int] = []
            self._ocr_pages = 0
            self._ocr_seconds = 0.0
        except BaseException:
            self._doc.close()
            raise

    def _page(self, index: int) -> PageText:
        warnings: list[str] = []
        try:
            page = self._doc.load_page(index)
            raw = str(page.get_text())
            text = clean_text(raw)
            if has_unmapped_glyphs(raw):
                warnings.append(UNMAPPED_GLYPHS)
            kind = _empty_page_kind(page) if not text.strip() else None
            if kind is not None and not (kind == BLANK_PAGE and warnings):
                warnings.append(kind)
            if ocr.wants_ocr(self._ocr.mode, text, kind):
                self._wanted.append(index + 1)
                text, warnings = self._recognise(page, index + 1, text, warnings)
        except Exception as exc:  # any page-level failure must not end the document
            if passes_through(exc):
                raise
            text = ""
            warnings = [failure_warning(exc)]
        if self._doc.is_repaired:
            warnings.append(REPAIRED)
        return PageText(number=index + 1, text=text, warnings=tuple(warnings))

    def _recognise(
        self, page: Any, number: int, text: str, warnings: list[str]
    ) -> tuple[str, list[str]]:
        """OCR'd text and warnings for a page, or what it had and why not: from the
        results given (recognised elsewhere, `ocr_slice`), else recognised here."""
        if self._results is not None:
            missing = ocr.OcrResult("", (ocr.skipped("the page was not planned for OCR"),))
            return ocr.applied(self._results.get(number, missing), text, warnings)
        cap, budget = self._ocr.max_pages, self._ocr.max_seconds
        if self._ocr_pages >= cap:
            return text, [*warnings, ocr.skipped(f"page cap {cap} reached")]
        if budget is not None and self._ocr_seconds >= budget:
            return text, [*warnings, ocr.skipped(f"time budget {budget:g} s reached")]
        started = time.monotonic()
        result = ocr.ocr_page(page, self._languages, self._ocr)
        self._ocr_seconds += time.monotonic() - started
        self._ocr_pages += result.recognised
        return ocr.applied(result, text, warnings)

    def pages_wanting_ocr(self) -> tuple[int, ...]:
        return tuple(self._wanted)

    def _trim_memory(self) -> None:
        _pymupdf.TOOLS.store_shrink(100)
        if self._doc.is_pdf:
            # Only a cache: failing to trim it must not fail the parse.
            with contextlib.suppress(RuntimeError):
                _pymupdf.mupdf.pdf_clear_xref(_pymupdf.mupdf.PdfDocument(self._doc.this))

    def _pages(self, start: int) -> Iterator[PageText]:
        baseline = _rss_bytes()
        for index in range(start - 1, self.info.page_count):
            yield self._page(index)
            done = index + 1
            if done % CHECK_EVERY:
                continue
            rss = _rss_bytes()
            if rss is None or baseline is None:
                if done % TRIM_EVERY_PAGES == 0:
                    self._trim_memory()
            elif rss - baseline > TRIM_GROWTH_BYTES:
                self._trim_memory()
                baseline = _rss_bytes()

    def close(self) -> None:
        if not self._doc.is_closed:
            self._doc.close()
            _pymupdf.TOOLS.store_shrink(100)
            # MuPDF's warning log is process-global and grows with every document.
            _pymupdf.TOOLS.reset_mupdf_warnings()
