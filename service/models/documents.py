"""What was uploaded: documents with their parse bookkeeping and token counts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.models.columns import Base, status_enum, utcnow
from service.models.status import DocumentStatus


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256", name="uq_documents_tenant_sha256"),
        Index("ix_documents_tenant_created", "tenant_id", "created_at"),
        Index("ix_documents_status_heartbeat", "status", "heartbeat_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("batches.id", ondelete="SET NULL")
    )
    sha256: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[DocumentStatus] = mapped_column(
        status_enum(DocumentStatus), default=DocumentStatus.queued
    )
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_reason: Mapped[str | None] = mapped_column(Text)

    page_count: Mapped[int | None]
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    title: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(35))
    # What the upload asked of OCR (`ocr=`, `ocr_languages=`); null: the settings'.
    ocr_mode: Mapped[str | None] = mapped_column(String(8))
    ocr_languages: Mapped[str | None] = mapped_column(String(64))
    # A scan OCR'd in slices (service/models/ocr.py): pages to recognise and those done
    # (null: none were sliced); when the last slice ended, the join (the ingest task
    # again, reading the slices' results) was sent.
    ocr_pages_total: Mapped[int | None]
    ocr_pages_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    ocr_join_sent_at: Mapped[datetime | None]
    # Extracted text lives in the blob store under this key; the DB keeps only the map.
    text_key: Mapped[str | None] = mapped_column(String(200))
    text_chars: Mapped[int | None] = mapped_column(BigInteger)
    text_bytes: Mapped[int | None] = mapped_column(BigInteger)
    page_map: Mapped[list[Any] | None]
    warnings: Mapped[list[Any] | None]

    # Ingest bookkeeping: a claim is (attempt, worker, heartbeat); a stale heartbeat
    # means the worker died and the sweeper may hand the document to another.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    parse_count: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    task_id: Mapped[str | None] = mapped_column(String(64))
    dispatched_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    parse_started_at: Mapped[datetime | None]
    parsed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    token_counts: Mapped[list[DocumentTokenCount]] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True
    )


class DocumentTokenCount(Base):
    __tablename__ = "document_token_counts"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    exact: Mapped[bool] = mapped_column(Boolean)
    tokenizer: Mapped[str] = mapped_column(String(300))
    method: Mapped[str] = mapped_column(String(32))
    # The model whose tokenizer counted (see ingestion.types.TokenCount); null before 0007.
    model: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    document: Mapped[Document] = relationship(back_populates="token_counts")
