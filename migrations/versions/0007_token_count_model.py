"""token counts say which model's tokenizer made them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A nullable column without constraints: SQLite adds it in place (see 0002). Rows counted
# before it keep null: which model's tokenizer made them was not recorded.


def upgrade() -> None:
    with op.batch_alter_table("document_token_counts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model", sa.String(length=300), nullable=True))


def downgrade() -> None:
    op.drop_column("document_token_counts", "model")
