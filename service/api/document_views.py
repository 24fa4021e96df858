"""Documents and their text as the API shows them."""

from __future__ import annotations

from ingestion.documents.ocr import OCR_MODES, OcrMode
from service.api import schemas
from service.documents import TextRange
from service.models import Document, DocumentStatus


def ocr_out(mode: str | None, languages: str | None) -> schemas.OcrChoiceOut:
    """A stored OCR choice (a document's or an archive batch's) as the API shows it;
    a mode the API would not take now shows as null, as the worker reads it."""
    known: OcrMode | None = next((m for m in OCR_MODES if m == mode), None)
    return schemas.OcrChoiceOut(mode=known, languages=languages)


def to_out(doc: Document) -> schemas.DocumentOut:
    return schemas.DocumentOut(
        id=doc.id,
        status=doc.status,
        filename=doc.filename,
        media_type=doc.media_type,
        size_bytes=doc.size_bytes,
        sha256=doc.sha256,
        page_count=doc.page_count,
        progress=schemas.ProgressOut(
            pages_done=doc.pages_done,
            page_count=doc.page_count,
            ocr_pages_total=doc.ocr_pages_total,
            ocr_pages_done=doc.ocr_pages_done if doc.ocr_pages_total is not None else None,
        ),
        title=doc.title,
        author=doc.author,
        language=doc.language,
        text_chars=doc.text_chars,
        ocr=ocr_out(doc.ocr_mode, doc.ocr_languages),
        warnings=[schemas.PageWarnings(**w) for w in doc.warnings or []],
        error=(
            schemas.ErrorOut(code=doc.error_code or "error", reason=doc.error_reason or "")
            if doc.status == DocumentStatus.failed
            else None
        ),
        token_counts={
            tc.role: schemas.TokenCountOut(
                count=tc.count,
                exact=tc.exact,
                tokenizer=tc.tokenizer,
                method=tc.method,
                model=tc.model,
            )
            for tc in doc.token_counts
        },
        attempts=doc.attempts,
        created_at=doc.created_at,
        parsed_at=doc.parsed_at,
    )


def text_out(doc: Document, text: TextRange) -> schemas.DocumentText:
    pages = [
        schemas.PageOut(
            number=span.number,
            char_start=span.char_start,
            char_end=span.char_end,
            warnings=list(span.warnings),
            text=page,
        )
        for span, page in text.pages
    ]
    return schemas.DocumentText(
        document_id=doc.id,
        page_count=text.page_count,
        first_page=text.first,
        last_page=text.last,
        pages=pages,
    )
