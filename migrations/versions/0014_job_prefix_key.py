"""job prefix key: a chat job's shared opening, hashed, for prefix-cache affinity;
and the index that finds the replica that last ran a document's job

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A nullable column without constraints: SQLite adds it in place (see 0002), and an
# index beside it (as 0004's). Jobs created before it have no key, which is what null
# means: no affinity beyond their document's.


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prefix_key", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_jobs_prefix_key_admitted", ["prefix_key", "admitted_at"])
        batch_op.create_index("ix_jobs_document_admitted", ["document_id", "admitted_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_document_admitted")
        batch_op.drop_index("ix_jobs_prefix_key_admitted")
        batch_op.drop_column("prefix_key")
