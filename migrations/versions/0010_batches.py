"""batches: one model for every way in (OpenAI statuses, counts, timestamps), and
batch_items, one row per request

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Nothing wrote `batches` before this revision, so it is made anew rather than altered
# column by column (SQLite would rebuild it once per change). The two foreign keys that
# point at it are dropped first on Postgres and put back; SQLite keeps them by name
# (env.py runs migrations with foreign keys off).
_REFS = (("documents", "fk_documents_batch_id_batches"), ("jobs", "fk_jobs_batch_id_batches"))
_STATUSES = (
    "validating", "in_progress", "finalizing", "completed",
    "failed", "expired", "cancelling", "cancelled",
)  # fmt: skip
_ITEM_STATUSES = ("pending", "queued", "failed", "cancelled", "expired")


def _status(values: Sequence[str], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32)


def _drop_refs(postgres: bool) -> None:
    for table, fk in _REFS:
        op.execute(f"UPDATE {table} SET batch_id = NULL WHERE batch_id IS NOT NULL")
        if postgres:
            op.drop_constraint(fk, table, type_="foreignkey")


def _add_refs(postgres: bool) -> None:
    if postgres:
        for table, fk in _REFS:
            op.create_foreign_key(fk, table, "batches", ["batch_id"], ["id"], ondelete="SET NULL")


def _batches() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", _status(_STATUSES, "batchstatus"), nullable=False),
        sa.Column("endpoint", sa.String(length=100), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("task", sa.String(length=32), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("max_output_tokens", sa.Integer(), nullable=True),
        sa.Column("dedup_key", sa.String(length=100), nullable=True),
        sa.Column("completion_window", sa.String(length=8), nullable=False),
        sa.Column("expires_at", ts, nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        *(
            sa.Column(name, ts, nullable=True)
            for name in (
                "expanded_at",
                "in_progress_at",
                "finalizing_at",
                "completed_at",
                "failed_at",
                "expired_at",
                "cancelling_at",
                "cancelled_at",
            )
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_batches_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
        sa.UniqueConstraint("tenant_id", "dedup_key", name="uq_batches_tenant_dedup_key"),
    )
    op.create_index("ix_batches_tenant_created", "batches", ["tenant_id", "created_at"])
    op.create_index("ix_batches_status", "batches", ["status"])


def _items() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "batch_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("custom_id", sa.String(length=1100), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("document_id", sa.Uuid(), nullable=True),
        sa.Column("status", _status(_ITEM_STATUSES, "batchitemstatus"), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name="fk_batch_items_batch_id_batches", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_batch_items_job_id_jobs", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["documents.id"],
            name="fk_batch_items_document_id_documents",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_batch_items"),
        sa.UniqueConstraint("batch_id", "custom_id", name="uq_batch_items_batch_custom_id"),
    )
    op.create_index("ix_batch_items_batch_line", "batch_items", ["batch_id", "line"])
    op.create_index("ix_batch_items_job_id", "batch_items", ["job_id"])


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _drop_refs(postgres)
    op.drop_table("batches")
    _batches()
    _items()
    _add_refs(postgres)


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.drop_table("batch_items")
    _drop_refs(postgres)
    op.drop_table("batches")
    op.create_table(
        "batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column(
            "status",
            _status(("queued", "running", "done", "failed", "cancelled"), "batchstatus"),
            nullable=False,
        ),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("task", sa.String(length=32), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("webhook_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_batches_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    _add_refs(postgres)
