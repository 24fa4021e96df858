"""job execution: the runner's claim, progress, the step a child job is, kept raw output

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Nullable columns without constraints: SQLite adds them in place (see 0002).
_COLUMNS = (
    ("worker", sa.String(length=200)),
    ("dispatched_at", sa.DateTime(timezone=True)),
    ("error_code", sa.String(length=64)),
    ("raw_output", sa.Text()),
    ("progress", sa.JSON()),
    ("step", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.create_index("ix_jobs_parent_id", ["parent_id"])
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warnings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_column("warnings")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_parent_id")
        for name, _ in reversed(_COLUMNS):
            batch_op.drop_column(name)
