"""What runs: jobs and their results, the vLLM backends they run on, and the KV
leases that hold their room there."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from ingestion.capacity.route_plan import Plan, Step
from service.models.columns import Base, PlanJSON, StepJSON, status_enum, utcnow
from service.models.status import JobStatus


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
    # What the server reports that its configuration cannot use, field -> {"expected",
    # "reported"} (service/backends/mismatch.py); set only while it is reachable, and
    # then `healthy` is false (null: matches, down, or a row written before 0015).
    mismatches: Mapped[dict[str, Any] | None]
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
        # The ledger's last-served lookup: a prefix's newest admitted job, read
        # backwards from the end of its key's run, however many jobs share it.
        Index("ix_jobs_prefix_key_admitted", "prefix_key", "admitted_at"),
        Index("ix_jobs_document_admitted", "document_id", "admitted_at"),
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
    # The pages the job works on, canonical ("7", "30-45"; `ingestion.documents.page_range`);
    # null: the whole document.
    pages: Mapped[str | None] = mapped_column(String(32))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[JobStatus] = mapped_column(status_enum(JobStatus), default=JobStatus.queued)
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
    # A chat job's shared opening, hashed (`ingestion.capacity.prefix`; null: a
    # document job, or an opening too short to matter): its admission affinity, as a
    # document is for the jobs on it.
    prefix_key: Mapped[str | None] = mapped_column(String(64))

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
