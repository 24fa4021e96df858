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
    "results", "backends", "kv_leases", "files", "alembic_version", "batch_items",
    "webhook_endpoints", "webhook_deliveries", "ocr_pages", "ocr_usage",
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


def test_sqlite_rebuild_of_jobs_keeps_results_and_leases(tmp_path: Path) -> None:
    """0006 rebuilds `jobs` on SQLite; a rebuild with foreign keys on would cascade
    its DROP into results and kv_leases. Rows written at 0004 must all survive, and
    afterwards a deleted document leaves its job behind with document_id null."""
    import uuid
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import MetaData, Table, event, insert, select, text

    from service.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0004")
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _fk_on(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    meta = MetaData()
    t = {n: Table(n, meta, autoload_with=engine) for n in ("tenants", "documents", "jobs",
         "results", "backends", "kv_leases")}  # fmt: skip
    # Reflected, ids are CHAR(32): what sa.Uuid stores on SQLite.
    tenant, doc, job, backend = (uuid.uuid4().hex for _ in range(4))
    now = datetime(2030, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(insert(t["tenants"]).values(id=tenant, name="t", created_at=now))
        conn.execute(insert(t["documents"]).values(
            id=doc, tenant_id=tenant, sha256="0" * 64, filename="d", media_type="text/plain",
            size_bytes=1, status="parsed", pages_done=0, attempts=0, parse_count=0,
            created_at=now, updated_at=now))  # fmt: skip
        conn.execute(insert(t["backends"]).values(
            id=backend, role="gemma", url="http://b", healthy=True, updated_at=now))  # fmt: skip
        conn.execute(insert(t["jobs"]).values(
            id=job, seq=1, tenant_id=tenant, document_id=doc, task="summarize", params={},
            max_output_tokens=1, idempotency_key="k", status="running", attempts=1,
            created_at=now))  # fmt: skip
        conn.execute(insert(t["results"]).values(id=uuid.uuid4().hex, job_id=job, created_at=now))
        conn.execute(insert(t["kv_leases"]).values(
            id=uuid.uuid4().hex, job_id=job, backend_id=backend, kv_bytes=1, kv_blocks=1,
            created_at=now, expires_at=now))  # fmt: skip

    upgrade(url)
    with engine.begin() as conn:
        for name in ("jobs", "results", "kv_leases"):
            assert conn.execute(text(f"SELECT count(*) FROM {name}")).scalar() == 1, name
        conn.execute(text("DELETE FROM documents"))
    with engine.connect() as conn:
        rows = conn.execute(select(t["jobs"].c.id, t["jobs"].c.document_id)).all()
        assert [(r.id, r.document_id) for r in rows] == [(job, None)]
        assert conn.execute(text("SELECT count(*) FROM results")).scalar() == 1
    engine.dispose()
    assert _diff(url) == []
