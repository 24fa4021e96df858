"""Test setup on the real services: a fresh Postgres database per run, Redis as the
Celery broker, real Celery worker processes. Nothing here is mocked.

Environment is fixed before any Longdoc module is imported, because settings are
read once per process and the worker subprocesses inherit the same values.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

if TYPE_CHECKING:
    from service.config import Settings

PG_ADMIN = os.environ.get("LONGDOC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("LONGDOC_TEST_REDIS", "redis://127.0.0.1:6379/15")
_DB_NAME = f"longdoc_test_{uuid.uuid4().hex[:10]}"
_DATA_DIR = Path(tempfile.mkdtemp(prefix="longdoc-test-"))
# Removed however the run ends, also when no test asked for the database.
atexit.register(shutil.rmtree, _DATA_DIR, True)


def _cache_dir() -> Path:
    from service.config import Settings  # after the environment above is fixed

    return Settings().cache_dir


os.environ.update(
    LONGDOC_DATABASE_URL=PG_ADMIN.rsplit("/", 1)[0].replace(
        "postgresql://", "postgresql+psycopg://"
    )
    + f"/{_DB_NAME}",
    LONGDOC_BROKER_URL=REDIS_URL,
    LONGDOC_DATA_DIR=str(_DATA_DIR),
    LONGDOC_HEARTBEAT_INTERVAL_S="0.5",
    LONGDOC_STALE_AFTER_S="3",
    LONGDOC_SWEEP_INTERVAL_S="1",
    LONGDOC_MAX_UPLOAD_BYTES=str(64 * 1024 * 1024),
    # Below the 2,415-page R manual, so a real PDF trips the page limit.
    LONGDOC_MAX_PAGES="2000",
)

REPO = Path(__file__).resolve().parent.parent
# Built assets (tokenizers, vLLM, the corpus): where the service looks for them.
CACHE = _cache_dir()
CORPUS = Path(os.environ.get("LONGDOC_CORPUS_DIR", CACHE / "corpus"))


def corpus_file(rel: str) -> Path:
    path = CORPUS / rel
    if not path.is_file():
        pytest.skip(f"corpus file {path} missing: run scripts/fetch-corpus.sh")
    return path


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{_DB_NAME}"')
    from service.config import get_settings
    from service.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    yield url
    from service.db import get_engine

    get_engine().dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_DB_NAME}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


def start_worker(
    log_path: Path, concurrency: int = 1, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A real Celery worker (both queues) in its own process group, so a test can
    SIGKILL all of it. `env` is added to this process's environment."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "worker",
            "--queues",
            "ingest,jobs",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"test-{uuid.uuid4().hex[:6]}@%h",
        ],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_worker(proc: subprocess.Popen[bytes], sig: int = 15) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, database: str, broker: redis.Redis
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    stop_worker(proc)


@pytest.fixture(scope="session")
def client(database: str, broker: redis.Redis) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from service.api.main import app

    with TestClient(app) as c:
        yield c


def _new_key(tenant: str, admin: bool = False) -> str:
    from service.api.deps import create_key
    from service.db import get_sessionmaker

    with get_sessionmaker()() as session:
        return create_key(session, tenant, admin=admin)


@pytest.fixture(scope="session")
def api_key(database: str) -> str:
    return _new_key(f"tenant-a-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="session")
def other_key(database: str) -> str:
    return _new_key(f"tenant-b-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="session")
def admin_key(database: str) -> str:
    """An operator's key (`longdoc keys create --admin`), of a tenant of its own."""
    return _new_key(f"operators-{uuid.uuid4().hex[:6]}", admin=True)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def api_settings(settings: Settings) -> Iterator[Settings]:
    """`settings` for the in-process API (the `client` fixture's app) for the block, by
    FastAPI's dependency override; the environment and `get_settings()` stay as they
    are. Code a test calls itself (a task's function, the ledger) is handed `settings`;
    a worker process gets them as its environment (`as_environment`)."""
    from service.api.main import app
    from service.config import get_settings

    before = app.dependency_overrides.get(get_settings)
    app.dependency_overrides[get_settings] = lambda: settings
    try:
        yield settings
    finally:
        if before is None:
            app.dependency_overrides.pop(get_settings, None)
        else:
            app.dependency_overrides[get_settings] = before


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.25):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
