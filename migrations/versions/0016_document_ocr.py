"""document ocr: what an upload asked of OCR (mode and languages), for its parse

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
# 0015 is another branch's; whichever lands second chains onto the other.
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Nullable columns without constraints: SQLite adds them in place (see 0002). Null is
# what documents uploaded before meant: the worker's settings decide.


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ocr_mode", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("ocr_languages", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("ocr_languages")
        batch_op.drop_column("ocr_mode")
