"""kv ledger: what admission needs on jobs and leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Only nullable columns without constraints, and indexes: SQLite adds those in
# place, so batch mode never rebuilds a table. A rebuild DROPs the old table with
# foreign keys on, and ON DELETE CASCADE would empty results and kv_leases.


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("kv_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("kv_blocks", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("est_duration_s", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("preferred_backend_id", sa.Uuid(), nullable=True))
        batch_op.create_index("ix_jobs_role_status_seq", ["role", "status", "seq"], unique=False)

    with op.batch_alter_table("kv_leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expected_end_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_kv_leases_expires", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("kv_leases", schema=None) as batch_op:
        batch_op.drop_index("ix_kv_leases_expires")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_role_status_seq")
    # Plain drop_column, not batch: batch would rebuild the table on SQLite (see
    # above), while SQLite >= 3.35 drops an unindexed, unconstrained column in place.
    for column in ("renewed_at", "expected_end_at"):
        op.drop_column("kv_leases", column)
    for column in (
        "preferred_backend_id",
        "waiting_since",
        "est_duration_s",
        "kv_blocks",
        "kv_bytes",
        "role",
    ):
        op.drop_column("jobs", column)
