"""The watchdog of one streamed request to a vLLM server: it keeps the read deadline
and watches the caller's cancel event, and aborts the request by shutting its socket
down when either fires."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any

_WATCH_S = 0.1  # how often the watcher looks at the caller's cancel event


class Watch:
    """One attempt's watchdog thread, for the read deadline and the cancel event.
    Why: the wait for the first token (queue + prefill) can be long with no byte arriving,
    and neither a cancel nor the shorter between-chunk timeout may wait for a chunk.
    httpx's read timeout is fixed per request (httpcore takes it once, when the body
    starts), so it is the first-token budget, a backstop; this thread keeps the real
    deadline (the budget until the first line, then read_timeout_s after each line). A
    thread blocked on a socket is not woken by close() from another (Linux), it is by
    shutdown(): the watcher takes the attempt's socket from httpcore's connect trace and
    shuts it down; the reader fails at once and `reason` says why; the server aborts."""

    def __init__(self, cancel: threading.Event | None, first_budget_s: float) -> None:
        self.cancel = cancel
        self.deadline = time.monotonic() + first_budget_s
        self.reason: str | None = None  # "cancelled" or "timeout" once it acted
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-watch", daemon=True)
        self._thread.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._sock = info["return_value"].get_extra_info("socket")
            if self.reason is not None:  # cancelled while connecting
                self._abort(self.reason)

    def _run(self) -> None:
        # It polls: the caller's Event cannot wake it for us, and the deadline moves both
        # ways (later with each line, earlier from the first-token budget to the read one).
        while not self._done.is_set():
            left = self.deadline - time.monotonic()
            if self.cancel is not None and self.cancel.is_set():
                self._abort("cancelled")
            elif left <= 0:
                self._abort("timeout")
            else:
                (self.cancel or self._done).wait(min(left, _WATCH_S))

    def _abort(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            # EBADF when httpcore already closed it; the object's fd is -1 by then, so a
            # reused descriptor number is never touched.
            with contextlib.suppress(OSError, AttributeError):
                self._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        self._done.set()

    def close(self) -> None:
        # Not joined: it sees _done within _WATCH_S and ends; a join would add that much to
        # every call. A late _abort() is harmless: the closed socket object has no fd.
        self._done.set()
