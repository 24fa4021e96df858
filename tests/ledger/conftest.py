"""The ledger's own databases: a fresh Postgres database made by Alembic, as the
main suite makes its own, and a SQLite file; tests that take `sessions` run on both."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from service.db import make_engine
from service.migrate import upgrade
from service.models import Backend, Document, Job, JobStatus, Tenant
from tests.conftest import PG_ADMIN

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"longdoc_ledger_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    server = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    url = f"{server}/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    upgrade(url)
    return url


def _sessions(url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(url)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture(scope="session")
def pg_sessions(pg_url: str) -> Iterator[sessionmaker[Session]]:
    yield from _sessions(pg_url)


@pytest.fixture(scope="session")
def sqlite_sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    yield from _sessions(sqlite_url)


# The Postgres half needs the server (the services tier); the SQLite half runs anywhere.
@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.services), "sqlite"])
def sessions(request: pytest.FixtureRequest) -> sessionmaker[Session]:
    name = "pg_sessions" if request.param == "postgres" else "sqlite_sessions"
    made: sessionmaker[Session] = request.getfixturevalue(name)
    return made


class World:
    """One test's backends and jobs, under a role name no other test uses."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.role = f"r{uuid.uuid4().hex[:12]}"
        self.seq = 0
        with sessions() as s:
            tenant = Tenant(name=self.role)
            s.add(tenant)
            s.flush()
            self.tenant_id = tenant.id
            s.commit()
        self.doc = self.document()

    def tenant(self, name: str) -> tuple[uuid.UUID, uuid.UUID]:
        """Another tenant, and a document of its own: (tenant, document)."""
        with self.sessions() as s:
            tenant = Tenant(name=f"{self.role}-{name}")
            s.add(tenant)
            s.commit()
        return tenant.id, self.document(tenant.id)

    def document(self, tenant_id: uuid.UUID | None = None) -> uuid.UUID:
        with self.sessions() as s:
            doc = Document(
                tenant_id=tenant_id or self.tenant_id,
                sha256=uuid.uuid4().hex,
                filename="d.pdf",
                media_type="application/pdf",
                size_bytes=1,
            )
            s.add(doc)
            s.commit()
            return doc.id

    def backend(self, capacity: int | None, healthy: bool = True) -> uuid.UUID:
        with self.sessions() as s:
            b = Backend(
                role=self.role,
                url=f"http://{uuid.uuid4().hex}:8000",
                kv_capacity_bytes=capacity,
                healthy=healthy,
            )
            s.add(b)
            s.commit()
            return b.id

    def job(
        self,
        kv_bytes: int,
        est_s: float | None = None,
        *,
        doc: uuid.UUID | None = None,
        since: datetime = T0,
        tenant: uuid.UUID | None = None,
        task: str = "summarize",
        **values: object,
    ) -> uuid.UUID:
        """A waiting job; a `chat` one has no document."""
        self.seq += 1
        with self.sessions() as s:
            job = Job(
                seq=self.seq,
                tenant_id=tenant or self.tenant_id,
                document_id=None if task == "chat" else doc or self.doc,
                task=task,
                max_output_tokens=16,
                idempotency_key=uuid.uuid4().hex,
                status=JobStatus.waiting_for_capacity,
                role=self.role,
                kv_bytes=kv_bytes,
                kv_blocks=kv_bytes // 4,
                est_duration_s=est_s,
                waiting_since=since,
                created_at=since,
                **values,
            )
            s.add(job)
            s.commit()
            return job.id


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> World:
    return World(sessions)


def at(s: float) -> datetime:
    """The fake clock: `s` seconds after T0."""
    return T0 + timedelta(seconds=s)


def many(
    w: World, n: int, tenant: uuid.UUID, doc: uuid.UUID, *, kv: int = 10, **values: Any
) -> list[uuid.UUID]:
    """`n` waiting jobs of one tenant in one transaction, in arrival order."""
    ids = []
    with w.sessions() as s:
        for _ in range(n):
            w.seq += 1
            job = Job(
                id=uuid.uuid4(),
                seq=w.seq,
                tenant_id=tenant,
                document_id=doc,
                task="summarize",
                max_output_tokens=16,
                idempotency_key=uuid.uuid4().hex,
                status=JobStatus.waiting_for_capacity,
                role=w.role,
                kv_bytes=kv,
                kv_blocks=kv // 4,
                **{"est_duration_s": 5.0, "waiting_since": T0, "created_at": T0, **values},
            )
            s.add(job)
            ids.append(job.id)
        s.commit()
    return ids
