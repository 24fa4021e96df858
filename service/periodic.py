"""Periodic work: one loop, one error policy, for everything a worker does on a clock.

Two kinds of user, one `Scheduler`:

- the worker's main process runs its chores, the sweeper and the backend refresher,
  from one scheduler (`workers/schedule.py` registers them at the intervals the
  settings give, `SWEEP_INTERVAL_S` and `BACKEND_REFRESH_INTERVAL_S`);
- a task that must keep saying it is alive while it works (the ingest claim
  heartbeat, the job lease renewal) wraps the work in `with heartbeat(...)`: a
  one-job scheduler that beats until the block exits.

Why a loop in the worker and not Celery beat: beat turns each tick into a message,
and the sweep would then run as a task in a pool child, behind whatever parse or job
holds it (one child by default): the sweep that hands a dead worker's parse on would
wait for a live worker's 25-minute parse. Beat must also run exactly once per
cluster (`worker -B` in every worker would be N beats; one beat dies with its
worker), keeps its own schedule file, and puts the broker between the sweeper and
the work it recovers, when a lost broker message is one of the things the sweeper
is there for. Sweeps from several workers at once are safe (`workers/sweeper.py`),
so each worker runs its own loop; `longdoc serve` gets it through its worker like
any other, and a test runs a scheduler in-process, driving `tick` on a fake clock.

The error policy, the same for every job:

- an `Exception` from a job is logged with its traceback on the first failure of a
  run of failures, then one line per failure with the count ("… failed (N in a
  row)"), and the first success after them says "… recovered after N failure(s)";
  so an outage is one traceback in the log, not one a second. The loop goes on.
- a failed job runs again at its own interval: no growing back-off. A heartbeat
  must beat on time through an outage shorter than `STALE_AFTER_S` (or
  `LEASE_TTL_S`), or its first beat after the outage would come after the sweeper
  took its work away; for the sweeper the first round after an outage is the one
  that recovers work, and one failed connection attempt per interval is no load on
  a database that is down.
- the jobs of one scheduler run one at a time, in the order they fell due; a job
  must bound its own time (the probes have `BACKEND_PROBE_TIMEOUT_S`, connections the
  pool's timeout). A job that overruns its interval runs again as soon as the
  others due have run, once: no burst of catch-up runs.
- a job returning False is done and leaves the schedule (a lost lease has nothing
  left to renew); the loop ends when no job is left.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Job:
    """`fn` every `every_s` seconds, the first time at once when `first_now`."""

    name: str
    every_s: float
    fn: Callable[[], object]
    first_now: bool = True


class Scheduler:
    """Runs its jobs at their intervals on one daemon thread from `start()` (or the
    `with` block) until `stop()`; `tick()` runs the loop's body once, for tests."""

    def __init__(
        self,
        jobs: Sequence[Job],
        log: logging.Logger,
        *,
        name: str = "periodic",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len({j.name for j in jobs}) != len(jobs):
            raise ValueError("job names must differ: the log and the counts go by name")
        self.name = name
        self.jobs = list(jobs)
        self.failures = {j.name: 0 for j in jobs}  # in a row, now
        self.runs = {j.name: 0 for j in jobs}  # rounds started, failed or not
        self.stopped = threading.Event()
        self._log = log
        self._clock = clock
        now = clock()
        self._due = {j.name: now if j.first_now else now + j.every_s for j in jobs}
        # The loop runs in the context of whoever made it: a heartbeat's lines carry the
        # ids its task bound (service/logs.py); a thread would start with none.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._loop,), name=name, daemon=True
        )

    def tick(self) -> float | None:
        """Run every job that is due, in the order they fell due; the seconds until
        the next one is, or None when no job is left."""
        now = self._clock()
        for job in sorted(self._due_jobs(now), key=lambda j: self._due[j.name]):
            if self.stopped.is_set():
                break
            started = self._clock()
            # From its start, not its end: the interval is the job's rate. If that is
            # past already, it runs next tick, once.
            self._due[job.name] = started + job.every_s
            if self._once(job) is False:
                self.jobs.remove(job)
                del self._due[job.name]
        if not self._due:
            return None
        return max(0.0, min(self._due.values()) - self._clock())

    def _due_jobs(self, now: float) -> list[Job]:
        return [j for j in self.jobs if self._due[j.name] <= now]

    def _once(self, job: Job) -> object:
        self.runs[job.name] += 1
        try:
            result = job.fn()
        except Exception:
            self.failures[job.name] += 1
            n = self.failures[job.name]
            self._log.warning(
                "%s failed (%d in a row); trying again in %.1f s",
                job.name,
                n,
                job.every_s,
                exc_info=n == 1,  # the traceback once per outage
            )
            return None
        if self.failures[job.name]:
            self._log.warning("%s recovered after %d failure(s)", job.name, self.failures[job.name])
            self.failures[job.name] = 0
        return result

    def _loop(self) -> None:
        while True:
            wait = self.tick()
            if wait is None or self.stopped.wait(wait):
                return

    def start(self) -> Scheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the loop after the job now running, and waits for that."""
        self.stopped.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def heartbeat(
    name: str, every_s: float, fn: Callable[[], object], log: logging.Logger
) -> Scheduler:
    """`with heartbeat(...)`: `fn` every `every_s` on a thread of its own until the block
    exits (or `fn` returns False), the first beat one interval in; the error policy
    above, so a database outage only skips beats."""
    return Scheduler([Job(name, every_s, fn, first_now=False)], log, name=name)
