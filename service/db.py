"""Engine and sessions. One engine per process, created from settings on first use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar

import stamina
from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings, get_settings


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """An engine on `url`, its pool sized by `settings` (a server's); without them,
    SQLAlchemy's defaults (a migration, a test's own database)."""
    # hide_parameters: a statement's values stay out of its errors' text, and so out of
    # the tracebacks logged (document text, a webhook secret, a key's hash).
    options: dict[str, Any] = {"hide_parameters": True}
    if settings is not None:
        # Sized in Settings from the threads that use it; a short timeout, as a request
        # that waits for a connection is refused (503), not left queueing.
        options |= {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout_s,
        }
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **options
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **options)


@lru_cache
def get_engine() -> Engine:
    """The engine of a server process (its own settings); commands use sessions_for."""
    settings = get_settings()
    return make_engine(settings.database_url, settings)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def sessions_for(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on `settings`' database for one command; its engine is disposed after."""
    engine = make_engine(settings.database_url, settings)
    try:
        yield sessionmaker(engine, expire_on_commit=False)
    finally:
        engine.dispose()


def get_db() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


def release(session: Session) -> None:
    """End the session's transaction so that its connection goes back to the pool
    before slow work (waiting for a thread, reading a blob, a broker round trip); the
    objects it loaded stay usable (expire_on_commit=False)."""
    session.commit()


# Execution options for a bulk UPDATE/DELETE: the session's loaded objects are left as
# they were, and a caller that uses one again re-reads it (populate_existing, refresh).
NO_SYNC = {"synchronize_session": False}


def rows_changed(result: Result[Any]) -> int:
    """Rows an UPDATE/DELETE touched; conditional updates are how claims are taken."""
    assert isinstance(result, CursorResult)
    return result.rowcount


@contextmanager
def write_transaction(session: Session, *, commit: bool = True) -> Iterator[None]:
    """A write transaction. SQLite takes its write lock up front (BEGIN IMMEDIATE):
    a deferred transaction that read first could not upgrade to writing after
    another writer committed. Postgres relies on the row locks taken inside."""
    conn = session.connection()
    raw = conn.connection.driver_connection
    if conn.dialect.name == "sqlite" and not getattr(raw, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        session.rollback()
        raise
    if commit:
        session.commit()


P = ParamSpec("P")
T = TypeVar("T")
# Postgres aborts one transaction of a deadlock (40P01) and, under stricter isolation,
# one side of a serialization conflict (40001); running it again is the cure it asks for.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def is_conflict(exc: Exception) -> bool:
    """A transaction Postgres aborted only because of another one: safe to run again."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


def retry_conflicts(fn: Callable[P, T]) -> Callable[P, T]:
    """Run `fn` again (a few times, with jittered backoff; stamina logs each retry) when
    Postgres aborted its transaction as a deadlock victim or a serialization failure.
    `fn` must own the whole transaction: a retry starts it from the beginning."""
    retrying: Callable[P, T] = stamina.retry(
        on=is_conflict, attempts=5, timeout=30.0, wait_initial=0.05, wait_max=1.0
    )(fn)
    return retrying
