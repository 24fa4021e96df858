"""The whole schema, SQLAlchemy 2.0 typed. Alembic migrations create it; nothing else does.

Designed up front for the routing and job issues: jobs, results, batches, vLLM
backends and KV leases exist now so later work adds columns, not tables.
"""

from __future__ import annotations

import enum
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from ingestion.capacity.route_plan import Plan, Step, step_from_json


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every dialect (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PlanJSON(TypeDecorator[Plan]):
    """A job's plan, typed in Python and stored as `Plan.to_json()`: every reader gets a
    checked `Plan`, never a dict to pick apart."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Plan | None, dialect: Dialect) -> dict[str, Any] | None:
        return None if value is None else value.to_json()

    def process_result_value(self, value: Any, dialect: Dialect) -> Plan | None:
        return None if value is None else Plan.from_json(value)


class StepJSON(TypeDecorator[Step]):
    """The request of a map-reduce plan that a child job runs, stored as its `to_json()`."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Step | None, dialect: Dialect) -> dict[str, Any] | None:
        return None if value is None else value.to_json()

    def process_result_value(self, value: Any, dialect: Dialect) -> Step | None:
        return None if value is None else step_from_json(value)


class Base(DeclarativeBase):
    # Stable constraint names so migrations can refer to them on every dialect.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR + CHECK, so adding a state later is a plain migration.
    return Enum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


class DocumentStatus(enum.StrEnum):
    queued = "queued"
    parsing = "parsing"
    parsed = "parsed"
    failed = "failed"


class JobStatus(enum.StrEnum):
    queued = "queued"
    waiting_for_capacity = "waiting_for_capacity"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


# A job in one of these states never changes again.
FINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class BatchStatus(enum.StrEnum):
    """OpenAI's batch statuses, for every way in (archives, request files)."""

    validating = "validating"
    in_progress = "in_progress"
    finalizing = "finalizing"
    completed = "completed"
    failed = "failed"
    expired = "expired"
    cancelling = "cancelling"
    cancelled = "cancelled"


# A batch in one of these states never changes again.
BATCH_FINAL = (
    BatchStatus.completed,
    BatchStatus.failed,
    BatchStatus.expired,
    BatchStatus.cancelled,
)


class BatchItemStatus(enum.StrEnum):
    """A request's own status while it has no job: once it has one, the job's status
    is the request's (read by join), so the job code paths know nothing of batches."""

    pending = "pending"
    queued = "queued"  # it has its job
    failed = "failed"  # never became a job (an entry error), `error_code` says why
    cancelled = "cancelled"
    expired = "expired"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A bearer key, stored as the SHA-256 of the secret; `prefix` finds the row."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    # An operator's key: sees backends' URLs, errors and load (README, API).
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    tenant: Mapped[Tenant] = relationship()


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
        _enum(DocumentStatus), default=DocumentStatus.queued
    )
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_reason: Mapped[str | None] = mapped_column(Text)

    page_count: Mapped[int | None]
    pages_done: Mapped[int] = mapped_column(Integer, default=0)
    title: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(35))
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
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus), default=BatchStatus.validating)
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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The expansion (every request made an item) ended, done or stopped; before it
    # the batch cannot finish, however final its items so far are.
    expanded_at: Mapped[datetime | None]
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
        _enum(BatchItemStatus), default=BatchItemStatus.pending
    )
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Backend(Base):
    """A vLLM server as last measured; the KV ledger locks this row to admit a job."""

    __tablename__ = "backends"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    role: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(500), unique=True)
    model: Mapped[str | None] = mapped_column(String(300))
    max_model_len: Mapped[int | None] = mapped_column(BigInteger)
    block_size: Mapped[int | None]
    num_blocks: Mapped[int | None] = mapped_column(BigInteger)
    kv_capacity_bytes: Mapped[int | None] = mapped_column(BigInteger)
    kv_capacity_tokens: Mapped[int | None] = mapped_column(BigInteger)
    # How kv_capacity_bytes was found: measured, derived, configured (null: unknown,
    # or a row written before 0003).
    capacity_source: Mapped[str | None] = mapped_column(String(16))
    # The KV dtype the pool is stored in (fp32, bf16, fp8; null: not known, or a row
    # written before 0008): what admission charges each token at.
    kv_dtype: Mapped[str | None] = mapped_column(String(8))
    overrides: Mapped[dict[str, Any] | None]
    healthy: Mapped[bool] = mapped_column(Boolean, default=False)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_seen_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency_key"),
        Index("ix_jobs_tenant_status", "tenant_id", "status"),
        Index("ix_jobs_status_seq", "status", "seq"),
        # The ledger's admission scan: one role's waiting jobs in arrival order.
        Index("ix_jobs_role_status_seq", "role", "status", "seq"),
        Index("ix_jobs_parent_id", "parent_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Arrival order for fair admission: nanoseconds at insert work on both dialects
    # without a sequence.
    seq: Mapped[int] = mapped_column(BigInteger, default=time.time_ns)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # Null once the document is deleted: a job (and its result) outlives its document,
    # so a client polling it sees how it ended rather than a 404.
    document_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL")
    )
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("batches.id", ondelete="SET NULL")
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    task: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_output_tokens: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    plan: Mapped[Plan | None] = mapped_column(PlanJSON)
    backend_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("backends.id", ondelete="SET NULL")
    )
    error_reason: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    admitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    kv_wait_s: Mapped[float | None] = mapped_column(Float)
    prefill_s: Mapped[float | None] = mapped_column(Float)

    # What the KV ledger admits on: the backend role the plan chose, the KV the
    # request reserves there, how long it is expected to hold it (backfilling
    # needs an end time), and since when it waits (the aging bound).
    role: Mapped[str | None] = mapped_column(String(32))
    kv_bytes: Mapped[int | None] = mapped_column(BigInteger)
    kv_blocks: Mapped[int | None] = mapped_column(BigInteger)
    est_duration_s: Mapped[float | None] = mapped_column(Float)
    waiting_since: Mapped[datetime | None]
    # A replica whose prefix cache likely holds this document; without one the
    # ledger looks up the replica that last served the document. Only a hint, so
    # no foreign key: SQLite could not add one without rebuilding `jobs`.
    preferred_backend_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    # The task polling for this job's admission, then running it (`workers.job_claims`):
    # admission only places jobs whose poller beat recently, and only that poller runs it.
    worker: Mapped[str | None] = mapped_column(String(200))
    dispatched_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    # The model's last output when it could not be used (schema mismatch): kept for the client.
    raw_output: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict[str, Any] | None]
    # A child of a map-reduce job: the map or reduce request of its parent's plan that
    # it runs. Null on the jobs clients create.
    step: Mapped[Step | None] = mapped_column(StepJSON)


class Result(Base):
    """One per job: a retried request never writes a second row (unique job_id)."""

    __tablename__ = "results"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]
    raw_output: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(300))
    backend_url: Mapped[str | None] = mapped_column(String(500))
    request_id: Mapped[str | None] = mapped_column(String(100))
    prompt_tokens: Mapped[int | None]
    completion_tokens: Mapped[int | None]
    warnings: Mapped[list[Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class KvLease(Base):
    """KV-cache bytes reserved for one job on one backend until released or expired."""

    __tablename__ = "kv_leases"
    __table_args__ = (
        Index("ix_kv_leases_backend_expires", "backend_id", "expires_at"),
        Index("ix_kv_leases_expires", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    backend_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("backends.id", ondelete="CASCADE"))
    kv_bytes: Mapped[int] = mapped_column(BigInteger)
    kv_blocks: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # When the job's estimate says it ends; admission plans reservations on it.
    expected_end_at: Mapped[datetime | None]
    renewed_at: Mapped[datetime | None]
