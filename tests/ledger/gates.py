"""Forced interleavings on real Postgres: pause one session's transaction right after
its first statement that locks or writes rows of `jobs` or `kv_leases` (or other
tables), let another
session run into those locks, then let the first go on. A session is blocked when
Postgres says it waits on a lock.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.orm import Session

from tests.waiting import wait_for

WAIT_S = 60.0  # generous: a loaded machine is slow, a stuck one never gets there


def _locks(tables: tuple[str, ...]) -> re.Pattern[str]:
    names = "|".join(tables)
    return re.compile(
        rf"^\s*(UPDATE|DELETE FROM|INSERT INTO)\s+({names})\b"
        rf"|\bFROM ({names})\b.*\bFOR (NO KEY )?UPDATE",
        re.S | re.I,
    )


def backend_pid(session: Session) -> int:
    """The Postgres process of the session's (now open) transaction."""
    pid = session.connection().exec_driver_sql("select pg_backend_pid()").scalar()
    assert isinstance(pid, int)
    return pid


class Gate:
    """Holds `session`'s current transaction after (or with `before`, just before) its
    first statement that locks rows of `tables`, until `open()`."""

    def __init__(
        self,
        session: Session,
        *,
        before: bool = False,
        tables: tuple[str, ...] = ("jobs", "kv_leases"),
    ) -> None:
        self._locks = _locks(tables)
        self.paused = threading.Event()
        self._open = threading.Event()
        when = "before_cursor_execute" if before else "after_cursor_execute"
        event.listen(session.connection(), when, self._hold)

    def _hold(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if self.paused.is_set() or not self._locks.search(statement):
            return
        self.paused.set()
        if not self._open.wait(WAIT_S):
            raise AssertionError("the gate was never opened")

    def open(self) -> None:
        self._open.set()


class Monitor:
    """A connection of its own that watches the others."""

    def __init__(self, sqlalchemy_url: str) -> None:
        url = sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://")
        self.conn = psycopg.connect(url, autocommit=True)

    def waits_on_lock(self, pid: int) -> bool:
        row = self.conn.execute(
            "select wait_event_type from pg_stat_activity where pid = %s", (pid,)
        ).fetchone()
        return row is not None and row[0] == "Lock"

    def until(self, what: Callable[[], bool], why: str) -> None:
        wait_for(what, timeout=WAIT_S, interval=0.02, what=why)

    def close(self) -> None:
        self.conn.close()


class Runner(threading.Thread):
    """Runs `fn` in a thread of its own; keeps its result or its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        self.join(WAIT_S)
        assert not self.is_alive(), "still running: stuck on a lock"
        if self.error is not None:
            raise self.error
        return self.result
