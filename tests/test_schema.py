"""The schema comes from Alembic alone, and the migrations match the models."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from service.migrate import upgrade
from service.models import Base

TABLES = {
    "tenants", "api_keys", "documents", "document_token_counts", "batches", "jobs",
    "results", "backends", "kv_leases", "alembic_version",
}  # fmt: skip


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    return list(diff)


def test_postgres_schema_matches_models(database: str) -> None:
    engine = create_engine(database)
    assert set(inspect(engine).get_table_names()) == TABLES
    engine.dispose()
    assert _diff(database) == []


def test_sqlite_upgrade_from_empty_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    upgrade(url)  # a second run is a no-op, not an error
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == TABLES
    engine.dispose()
    assert _diff(url) == []
