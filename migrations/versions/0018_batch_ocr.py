"""batch ocr: what an archive batch asked of OCR, for every document it expands

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns of 0016's documents, on batches: nullable, without constraints (SQLite
# adds them in place). Null is what batches made before meant: the settings decide.


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ocr_mode", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("ocr_languages", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_column("ocr_languages")
        batch_op.drop_column("ocr_mode")
