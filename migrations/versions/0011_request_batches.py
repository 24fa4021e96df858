"""request batches: a batch's input file, the output and error files written as its
requests end, when each request's line was written, and when the batch's expansion
was last sent again

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILES = ("input_file_id", "output_file_id", "error_file_id")


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table to add the foreign keys; Postgres alters it.
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("resent_at", sa.DateTime(timezone=True), nullable=True))
        for column in _FILES:
            batch_op.add_column(sa.Column(column, sa.Uuid(), nullable=True))
            batch_op.create_foreign_key(
                f"fk_batches_{column}_files", "files", [column], ["id"], ondelete="SET NULL"
            )
    with op.batch_alter_table("batch_items") as batch_op:
        batch_op.add_column(sa.Column("written_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_items") as batch_op:
        batch_op.drop_column("written_at")
    with op.batch_alter_table("batches") as batch_op:
        for column in reversed(_FILES):
            batch_op.drop_constraint(f"fk_batches_{column}_files", type_="foreignkey")
            batch_op.drop_column(column)
        batch_op.drop_column("resent_at")
