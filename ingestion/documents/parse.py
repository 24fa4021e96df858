"""Opening a document of any supported type and reading it page by page.

    with open_document(path, media_type, max_pages=5000) as doc:
        doc.info.page_count
        for page in doc.pages(start=1):
            ...

Backends: PyMuPDF for PDF, EPUB, XPS, FB2, MOBI, CBZ and HTML
(`mupdf_doc`), our own streaming readers for DOCX (`docx_doc` over
`docx_stream`, where the comparison with PyMuPDF is written down) and for plain
text and Markdown (`text_doc`, with PyMuPDF's measurements); OCR of scanned pages
with Tesseract in `ocr`. Page warnings are listed in
`pagetext`. Every refusal is an `IngestError` with one of the codes
``unsupported_type``, ``encrypted``, ``corrupt``, ``empty``,
``too_many_pages``, ``too_large``, ``too_deeply_nested``; a page that fails is yielded empty with an
``extraction_failed: ...`` warning and the document goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ingestion.documents import formats, nesting, zipsniff
from ingestion.documents.docx_doc import DocxDocument
from ingestion.documents.mupdf_doc import FILETYPES, MuPDFDocument
from ingestion.documents.ocr import OFF, OcrOptions, OcrResult
from ingestion.documents.parsed import ParsedDocument
from ingestion.documents.text_doc import TextDocument
from ingestion.types import IngestError

__all__ = ["ParsedDocument", "open_document"]


def _check_container(path: Path, media_type: str) -> None:
    """ZIP-based types must really be that package: MuPDF reads any ZIP as blank pages."""
    kind = zipsniff.kind_from_path(path)
    if kind.media_type is None:
        raise formats.unsupported(kind.description)
    if kind.media_type != media_type:
        raise IngestError(
            "unsupported_type",
            f"this is {kind.description}, not {formats.SUPPORTED_MEDIA_TYPES[media_type]}; "
            f"supported formats: {formats.supported_list()}",
        )


def open_document(
    path: Path,
    media_type: str,
    *,
    max_pages: int,
    ocr_options: OcrOptions = OFF,
    ocr_results: Mapping[int, OcrResult] | None = None,
) -> ParsedDocument:
    """Open `path` as `media_type` (from `formats.detect_media_type_path`); pages
    without text are OCR'd as `ocr_options` say (`ocr`; by default not at all), or
    take their text from `ocr_results` (page number: result) where given.

    Raises `IngestError` at open time, before any page is read, for anything
    that cannot be parsed or has more than `max_pages` pages.
    """
    if media_type not in formats.SUPPORTED_MEDIA_TYPES:
        raise formats.unsupported(f"a file of type {media_type!r}")
    if path.stat().st_size == 0:
        raise IngestError("empty", "the file is empty (0 bytes)")
    if media_type in formats.ZIP_MEDIA_TYPES:
        _check_container(path, media_type)
    if media_type == formats.DOCX:
        return DocxDocument(path, media_type, max_pages=max_pages)
    if media_type in formats.TEXT_MEDIA_TYPES:
        return TextDocument(path, media_type, max_pages=max_pages)
    if media_type in FILETYPES:
        # MuPDF lays markup out recursively: too deep a tree kills the process.
        nesting.check_markup(path, media_type)
        return MuPDFDocument(
            path, media_type, max_pages=max_pages, ocr_options=ocr_options, ocr_results=ocr_results
        )
    raise formats.unsupported(f"a file of type {media_type!r}")  # pragma: no cover
