"""backend mismatches: what a reachable server reports that its configuration cannot
use (another model, a shorter context, a smaller pool, another KV dtype)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A nullable column without constraints: SQLite adds it in place (see 0002). Rows written
# before it keep null, which is what a matching server's row holds; the next refresh
# writes it.


def upgrade() -> None:
    with op.batch_alter_table("backends", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mismatches", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backends", schema=None) as batch_op:
        batch_op.drop_column("mismatches")
