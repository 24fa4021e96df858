"""jobs outlive their document: jobs.document_id nullable, ON DELETE SET NULL

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FK = "fk_jobs_document_id_documents"


def _refkey(ondelete: str, nullable: bool) -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    # Changing a foreign key rebuilds `jobs` on SQLite, and the DROP of the old table
    # would cascade into results and kv_leases: env.py turns foreign keys off for
    # migrations; refuse to run if they are on anyway.
    if sqlite and bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("run this migration with PRAGMA foreign_keys=OFF")
    with op.batch_alter_table("jobs", schema=None, recreate="auto") as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.alter_column("document_id", existing_type=sa.Uuid(), nullable=nullable)
        batch_op.create_foreign_key(_FK, "documents", ["document_id"], ["id"], ondelete=ondelete)
    if sqlite:
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"foreign keys broken by the rebuild of jobs: {broken[:5]}")


def upgrade() -> None:
    _refkey("SET NULL", nullable=True)


def downgrade() -> None:
    # Jobs whose document is gone cannot point at one again.
    op.execute("DELETE FROM jobs WHERE document_id IS NULL")
    _refkey("CASCADE", nullable=False)
