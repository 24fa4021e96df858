"""Batches, whichever way they came in, and their requests (items)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from service.models.columns import Base, status_enum, utcnow
from service.models.status import BatchItemStatus, BatchStatus


class Batch(Base):
    """One batch, whichever way it came in: an archive (each entry a document and a
    job) or a request file. Its requests are `BatchItem`s; counts are computed from
    them joined to their jobs, and kept here once the batch is final."""

    __tablename__ = "batches"
    __table_args__ = (
        UniqueConstraint("tenant_id", "dedup_key", name="uq_batches_tenant_dedup_key"),
        Index("ix_batches_tenant_created", "tenant_id", "created_at"),
        Index("ix_batches_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default="archive")  # archive|openai|anthropic
    status: Mapped[BatchStatus] = mapped_column(
        status_enum(BatchStatus), default=BatchStatus.validating
    )
    endpoint: Mapped[str | None] = mapped_column(String(100))
    filename: Mapped[str | None] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[dict[str, Any] | None]
    max_output_tokens: Mapped[int | None] = mapped_column(Integer)
    # Same input + task + params + budget from one tenant: the same batch. A batch that
    # ended badly gives its key up (renamed `key@id`) to the one that retries it.
    dedup_key: Mapped[str | None] = mapped_column(String(100))
    completion_window: Mapped[str] = mapped_column(String(8), default="24h")
    expires_at: Mapped[datetime | None]
    # `metadata` is SQLAlchemy's own attribute on every model.
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    errors: Mapped[list[Any] | None]  # [{code, message, line}]
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    callback_url: Mapped[str | None] = mapped_column(Text)
    # An archive's OCR choice (`ocr=`, `ocr_languages=`), given to every document its
    # expansion makes, as a single upload's is (`Document.ocr_mode`); null: the settings'.
    ocr_mode: Mapped[str | None] = mapped_column(String(8))
    ocr_languages: Mapped[str | None] = mapped_column(String(64))
    # A request-file batch's input, and the files its lines are written to as its
    # requests end (made with their first line). A deleted file leaves them null.
    input_file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("files.id", ondelete="SET NULL")
    )
    output_file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("files.id", ondelete="SET NULL")
    )
    error_file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("files.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The expansion (every request made an item) ended, done or stopped; before it
    # the batch cannot finish, however final its items so far are.
    expanded_at: Mapped[datetime | None]
    # When the worker's advance last sent the expansion again (none came to it).
    resent_at: Mapped[datetime | None]
    in_progress_at: Mapped[datetime | None]
    finalizing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    expired_at: Mapped[datetime | None]
    cancelling_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]


class BatchItem(Base):
    """One request of a batch. For an archive, `custom_id` is the entry's path."""

    __tablename__ = "batch_items"
    __table_args__ = (
        UniqueConstraint("batch_id", "custom_id", name="uq_batch_items_batch_custom_id"),
        Index("ix_batch_items_batch_line", "batch_id", "line"),
        Index("ix_batch_items_job_id", "job_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    custom_id: Mapped[str] = mapped_column(String(1100))
    line: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    document_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL")
    )
    status: Mapped[BatchItemStatus] = mapped_column(
        status_enum(BatchItemStatus), default=BatchItemStatus.pending
    )
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_reason: Mapped[str | None] = mapped_column(Text)
    # When its line went into the batch's output or error file (committed with the
    # file's new size): null until then, so a line is written once.
    written_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
