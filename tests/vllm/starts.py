"""Short-lived vLLM servers started ahead of the tests that read them, up to one per
core at a time.

A vLLM CPU start is ~20 s of mostly single-threaded Python imports (API server, then
engine core), so on a 2-core machine a second start beside the first costs little more
wall time than one alone. Memory bounds it too: a start waits until the servers
already running leave room for it (one always runs, however little is free).

Each job runs in a thread of its own and gets the core its server is to bind; its
return value, or the exception it raised, is kept for the test that asks for it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psutil

GIB = 1 << 30
# Kept free for pytest, the session's other servers and the OS.
RESERVE_BYTES = 2 * GIB


class StartPool:
    def __init__(self, most: int = 2) -> None:
        # Highest core first: vLLM binds core 0 by default, where a session server runs.
        cores = sorted(os.sched_getaffinity(0), reverse=True)[: max(1, most)]
        self._cores: queue.Queue[str] = queue.Queue()
        for core in cores:
            self._cores.put(str(core))
        self._budget = psutil.virtual_memory().available - RESERVE_BYTES
        self._held = 0
        self._room = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=len(cores), thread_name_prefix="vllm-start")
        self._jobs: dict[str, Future[Any]] = {}

    def submit(self, key: str, need_bytes: int, job: Callable[[str], Any]) -> None:
        """Run `job(core)` once there is a free core and `need_bytes` of memory."""
        if key not in self._jobs:
            self._jobs[key] = self._pool.submit(self._run, need_bytes, job)

    def result(self, key: str) -> Any:
        """What the job returned; re-raises what it raised."""
        return self._jobs[key].result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, need: int, job: Callable[[str], Any]) -> Any:
        with self._room:
            self._room.wait_for(lambda: self._held == 0 or self._held + need <= self._budget)
            self._held += need
        core = self._cores.get()
        try:
            return job(core)
        finally:
            self._cores.put(core)
            with self._room:
                self._held -= need
                self._room.notify_all()
