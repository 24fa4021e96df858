"""backend KV dtype: what the server stores its pool in, as discovery found it

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A nullable column without constraints: SQLite adds it in place (see 0002). Rows written
# before it keep null until the next refresh; admission then charges the configured dtype.


def upgrade() -> None:
    with op.batch_alter_table("backends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kv_dtype", sa.String(length=8), nullable=True))


def downgrade() -> None:
    op.drop_column("backends", "kv_dtype")
