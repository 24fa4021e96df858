"""Run something every N seconds in a thread that outlives its errors.

Every background loop of a worker (the ingest claim heartbeat, the job lease keeper,
the sweeper, the backend refresher) talks to the database or the network, and a
short outage of either must not end it: a heartbeat thread that died on its first
OperationalError let the sweeper hand a parse that was still running to another
worker. So an error is logged, with how many came in a row, and the loop goes on;
the first success after errors is logged too, so the log shows the outage's end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


class Periodic(threading.Thread):
    """Calls `step` every `interval_s` (first at once when `first_now`) until stop();
    a step returning False ends the loop (it has nothing more to do)."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        step: Callable[[], bool | None],
        log: logging.Logger,
        *,
        first_now: bool = False,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.failures = 0  # in a row, now
        self._step = step
        self._log = log
        self._first_now = first_now

    def run(self) -> None:
        if self._first_now and not self._once():
            return
        while not self.stopped.wait(self.interval_s):
            if not self._once():
                return

    def _once(self) -> bool:
        try:
            more = self._step()
        except Exception:
            self.failures += 1
            # The traceback once per outage; after that one line per failure.
            self._log.warning(
                "%s failed (%d in a row); trying again in %.1f s",
                self.name,
                self.failures,
                self.interval_s,
                exc_info=self.failures == 1,
            )
            return True
        if self.failures:
            self._log.warning("%s recovered after %d failure(s)", self.name, self.failures)
            self.failures = 0
        return more is not False

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
