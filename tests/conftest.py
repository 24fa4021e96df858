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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

from tests.prereq import require

# Re-exported: most tests take the one waiting helper from here.
from tests.waiting import wait_for as wait_for

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
    require(path.is_file(), f"corpus file {path} missing: run make corpus")
    return path


# The language packs the OCR tests read in; `make test` installs them with Tesseract.
OCR_LANGUAGES = frozenset({"eng", "fra"})


@pytest.fixture(scope="session")
def tesseract() -> Path:
    """Tesseract's language folder, holding OCR_LANGUAGES (under CI a missing one fails)."""
    from ingestion.documents import ocr

    found = ocr.find_tessdata()
    have = ocr.installed_languages(found) if found is not None else frozenset()
    require(
        found is not None and have >= OCR_LANGUAGES,
        f"Tesseract with {'+'.join(sorted(OCR_LANGUAGES))} not found (have: "
        f"{'+'.join(sorted(have)) or 'none'}): apt-get install tesseract-ocr "
        "tesseract-ocr-eng tesseract-ocr-fra (make test does)",
    )
    assert found is not None
    return found


# The tiers (`pytest -m "not vllm and not services"` is the fast loop). A test's tier
# follows from the fixtures it asks for, so a new test lands in the right one without
# anyone remembering to mark it; every other fixture of these tiers builds on these.
# Named with their module: tests/bench has a `deployment` of its own, a simulated one.
_SERVICES = frozenset(  # Postgres and Redis, and so the Celery workers
    {"tests.conftest.database", "tests.conftest.broker", "tests.ledger.conftest.pg_url"}
)
_VLLM = frozenset(  # real vLLM servers
    {
        "tests.vllm.conftest.smollm2_server",
        "tests.jobs.conftest.deployment",
        "tests.vllm.test_kv_geometry.starts",
    }
)


def _fixtures(item: pytest.Item) -> set[str]:
    """`module.name` of every fixture `item` runs, as resolved for it (overrides last)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    return {
        f"{defs[-1].func.__module__}.{name}"
        for name in info.names_closure
        if (defs := info.name2fixturedefs.get(name))
    }


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = _fixtures(item)
        if used & _SERVICES:
            item.add_marker(pytest.mark.services)
        if used & _VLLM:
            item.add_marker(pytest.mark.vllm)


_started: set[str] = set()  # the session-scoped services this run has set up


@pytest.fixture(scope="session")
def database() -> Iterator[str]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{_DB_NAME}"')
    from service.config import get_settings
    from service.migrate import upgrade

    url = get_settings().database_url
    upgrade(url)
    _started.add("database")
    yield url
    _started.discard("database")
    from service.db import get_engine

    get_engine().dispose()
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_DB_NAME}" WITH (FORCE)')


@pytest.fixture(scope="session")
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    _started.add("broker")
    yield client
    _started.discard("broker")
    client.flushdb()


@pytest.fixture(scope="module", autouse=True)
def _leave_no_work() -> Iterator[None]:
    """Work a module leaves unfinished does not become the next module's: its workers
    are gone, but a later worker's sweeper would take its stale parses and jobs up
    again, under other settings, in the slots the next tests wait for. Set up before
    any of the module's fixtures, so this runs after its workers have stopped."""
    yield
    if "database" in _started:
        _end_unfinished_work()
    if "broker" in _started:
        # The queues and the unacked messages, not kombu's bindings: a worker handed on
        # to the next module keeps consuming.
        client = redis.Redis.from_url(REDIS_URL)
        for pattern in ("ingest*", "jobs*", "unacked*"):
            for key in client.scan_iter(pattern):
                client.delete(key)


def _end_unfinished_work() -> None:
    from sqlalchemy import delete, select

    from service.db import get_sessionmaker, write_transaction
    from service.jobs import tree
    from service.models import FINAL, Document, DocumentStatus, Job, JobStatus, utcnow

    with get_sessionmaker()() as session, write_transaction(session):
        roots = select(Job.id).where(Job.parent_id.is_(None), Job.status.not_in(FINAL))
        tree.end_tree(
            session,
            list(session.scalars(roots)),
            JobStatus.cancelled,
            utcnow(),
            code="cancelled",
            reason="the test module that made it ended",
        )
        # Deleted, not failed: the same bytes uploaded later by the same tenant must
        # be parsed, not answered with this document.
        unfinished = (DocumentStatus.queued, DocumentStatus.parsing)
        session.execute(delete(Document).where(Document.status.in_(unfinished)))


def start_worker(
    log_path: Path,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """A real Celery worker (every queue) in its own process group, so a test can
    SIGKILL all of it. `env` is added to this process's environment; `args` to the
    worker's command line."""
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
            "ingest,jobs,ocr",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"test-{uuid.uuid4().hex[:6]}@%h",
            *args,
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


# The module-scoped worker handed on to the next module when that module's first test
# asks for it too: a start and a stop cost seconds each, and the worker would be up
# between the two tests either way. Every other test still runs without it.
_kept: list[subprocess.Popen[bytes]] = []
_next_wants_worker = False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _next_wants_worker
    _next_wants_worker = nextitem is not None and "tests.conftest.worker" in _fixtures(nextitem)
    try:
        return (yield)
    finally:
        _next_wants_worker = False


def pytest_sessionfinish() -> None:
    # A worker kept for a module that never ran (the run stopped first).
    while _kept:
        stop_worker(_kept.pop())


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, database: str, broker: redis.Redis
) -> Iterator[subprocess.Popen[bytes]]:
    proc = _kept.pop() if _kept else None
    if proc is None or proc.poll() is not None:
        proc = start_worker(tmp_path_factory.mktemp("worker") / "worker.log")
    yield proc
    if _next_wants_worker and proc.poll() is None:
        _kept.append(proc)
    else:
        stop_worker(proc)


@pytest.fixture(scope="session")
def client(database: str, broker: redis.Redis) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from service.api.main import app

    with TestClient(app) as c:
        yield c


def _new_key(tenant: str, admin: bool = False) -> str:
    from service.db import get_sessionmaker
    from service.keys import create_key

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
