"""Response and request bodies, kept apart from the logic that fills them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from ingestion.documents.ocr import OcrMode
from service.api.job_schemas import JobOut
from service.models import DocumentStatus

# A list's offset: the database takes a 64-bit one, and past it answered 500; no real
# listing comes near this.
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]

# An upload's and an archive batch's OCR parameters, one definition for both routes;
# the languages are checked further by `service.documents.ocr_request`.
OcrModeQuery = Annotated[
    OcrMode | None,
    Query(description="OCR pages without text (auto), every page (force), or none."),
]
OcrLanguagesQuery = Annotated[
    str | None, Query(description="Tesseract languages, e.g. deu+eng.", max_length=64)
]


class TokenCountOut(BaseModel):
    count: int
    exact: bool = Field(description="False when the count is an estimate, not a tokenizer's.")
    tokenizer: str
    method: str = Field(description="tokenizer (local file), server (vLLM /tokenize) or estimate")
    model: str | None = Field(
        default=None,
        description="The model whose tokenizer made the count: the role's served model "
        "may be a stand-in (the embedded server's SmolLM2 takes the gemma role). Null for "
        "an estimate.",
    )


class PageWarnings(BaseModel):
    page: int
    warnings: list[str]


class ErrorOut(BaseModel):
    code: str
    reason: str


class ProgressOut(BaseModel):
    pages_done: int
    page_count: int | None
    # A scan OCR'd in slices on the `ocr` queue: its pages to recognise, and those done
    # (recognised or failed); null for a document with no such pages.
    ocr_pages_total: int | None = None
    ocr_pages_done: int | None = None


class OcrChoiceOut(BaseModel):
    """What an upload (or its archive batch) asked of OCR; null: the settings decide."""

    mode: OcrMode | None = Field(description="auto, force or off; null: LONGDOC_OCR_MODE")
    languages: str | None = Field(
        description="Tesseract languages (deu+eng); null: the document's language, else "
        "LONGDOC_OCR_LANGUAGES"
    )


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: DocumentStatus
    filename: str
    media_type: str
    size_bytes: int
    sha256: str
    page_count: int | None
    progress: ProgressOut
    title: str | None
    author: str | None
    language: str | None
    text_chars: int | None
    ocr: OcrChoiceOut
    warnings: list[PageWarnings]
    error: ErrorOut | None
    token_counts: dict[str, TokenCountOut]
    attempts: int
    created_at: datetime
    parsed_at: datetime | None


class UploadOut(DocumentOut):
    job: JobOut | None = Field(default=None, description="The job, when a task was given.")


class DocumentList(BaseModel):
    items: list[DocumentOut]
    total: int
    limit: int
    offset: int


class PageOut(BaseModel):
    number: int
    char_start: int
    char_end: int
    warnings: list[str]
    text: str


class DocumentText(BaseModel):
    document_id: uuid.UUID
    page_count: int
    first_page: int
    last_page: int
    pages: list[PageOut]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
