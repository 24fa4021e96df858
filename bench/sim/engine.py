"""The event loop of the simulation: job arrivals, the step ends of the simulated vLLM
replicas (bench.sim.server) and the dispatcher's ticks, and `Dispatcher`, what a
policy (bench.sim.policies) implements to send ready requests to replicas."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from bench.sim.jobs import JobRun, Req
from bench.sim.server import Server
from bench.sim.workload import JobSpec

__all__ = ["Dispatcher", "Simulation"]


class Dispatcher:
    """Who sends which ready request to which server, and when."""

    name = "?"
    priority_servers = False

    def bind(self, sim: Simulation) -> None:
        self.sim = sim

    def on_ready(self, req: Req, now: float) -> None:
        raise NotImplementedError

    def on_finish(self, req: Req, now: float) -> None:
        """A request finished (its KV is free in the server)."""

    tick_s: float | None = None
    """How often `tick` runs while `holding()`; None: never."""

    def tick(self, now: float) -> None:
        """Periodic wake-up, as a worker polling the ledger."""

    def holding(self) -> bool:
        """Whether the dispatcher holds ready requests it has not sent yet."""
        return False


_ARRIVE, _STEP, _TICK = 0, 1, 2


class Simulation:
    """The event loop: job arrivals, server step ends and dispatcher ticks."""

    def __init__(
        self,
        jobs: Iterable[JobSpec],
        servers: list[Server],
        dispatcher: Dispatcher,
    ) -> None:
        self.servers = servers
        self.by_role: dict[str, list[Server]] = {}
        for s in servers:
            self.by_role.setdefault(s.role, []).append(s)
        self.dispatcher = dispatcher
        self.jobs: list[JobRun] = []
        self._events: list[tuple[float, int, int, object]] = []
        self._order = 0
        self._tick_pending = False
        for spec in jobs:
            run = JobRun(spec, remaining=len(spec.requests))
            # Reduces keep their job's place in line: one seq space, job-major.
            base = spec.id * 10_000
            run.requests = [Req(run, r, base + r.index) for r in spec.requests]
            for r in run.requests:
                for d in r.spec.deps:
                    run.requests[d].dependents.append(r)
            self.jobs.append(run)
            self._push(spec.arrival, _ARRIVE, run)
        dispatcher.bind(self)
        self.now = 0.0

    def _push(self, at: float, kind: int, payload: object) -> None:
        self._order += 1
        heapq.heappush(self._events, (at, self._order, kind, payload))

    def submit(self, req: Req, server: Server) -> None:
        assert server.role == req.role and server.id in req.spec.replicas
        server.submit(req)

    def _ready(self, req: Req, now: float) -> None:
        req.ready_at = now
        req.waiting_since = now
        self.dispatcher.on_ready(req, now)

    def _arm_tick(self, now: float) -> None:
        tick = self.dispatcher.tick_s
        if tick is not None and not self._tick_pending:
            self._tick_pending = True
            self._push(now + tick, _TICK, None)

    def run(self) -> None:  # noqa: C901
        while self._events:
            now, _, kind, payload = heapq.heappop(self._events)
            self.now = now
            if kind == _ARRIVE:
                assert isinstance(payload, JobRun)
                for r in payload.requests:
                    if r.pending == 0:
                        self._ready(r, now)
            elif kind == _STEP:
                assert isinstance(payload, Server)
                for r in payload.finish_step(now):
                    self.dispatcher.on_finish(r, now)
                    job = r.job
                    job.remaining -= 1
                    if job.remaining == 0:
                        job.finished_at = now
                    for d in r.dependents:
                        d.pending -= 1
                        if d.pending == 0:
                            self._ready(d, now)
            else:
                self._tick_pending = False
                self.dispatcher.tick(now)
            for s in self.servers:
                if s.step is None and s.has_work():
                    step = s.start_step(now)
                    if step is not None:
                        self._push(step.end, _STEP, s)
            if self.dispatcher.holding():
                self._arm_tick(now)
        unfinished = [j.spec.id for j in self.jobs if j.finished_at is None]
        assert not unfinished, f"jobs never finished: {unfinished[:10]}"
