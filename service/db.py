"""Engine and sessions. One engine per process, created from settings on first use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends
from sqlalchemy import CursorResult, Engine, Result, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.config import get_settings


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


def get_db() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]


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
