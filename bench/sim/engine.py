"""vLLM replicas on a simulated clock, and the event loop that drives them.

A `Server` follows vLLM V1's scheduler, simplified to what decides KV pressure:

- One step schedules at most `token_budget` tokens (--max-num-batched-tokens). Running
  requests go first, in the order they were admitted: one token for each decoding
  request, the rest of the budget to prefill chunks (chunked prefill).
- A running request gets KV blocks for the tokens it is about to compute (the
  `ServiceModel.occupancy` rule), not for its whole length. When the pool cannot
  give them, vLLM preempts: in FCFS mode the most recently admitted running request,
  in priority mode the lowest-priority one; its blocks are freed and, in recompute
  mode, everything it computed is computed again when it is readmitted. That is one
  preemption, and its computed tokens are the tokens recomputed. The check is the
  same for every policy, so Longdoc's preemptions are counted, never assumed zero.
- Waiting requests are admitted afterwards, head first, while budget remains and
  their first chunk's blocks are free (the head blocks the rest, as in vLLM), and not
  in a step that preempted.

Every step is simulated (tens of thousands on the busiest replica for the default
workload): decode-only stretches are short next to prefill here, and stepping
through them keeps the KV check exact at every step.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.sim.perf import ServiceModel
from bench.sim.workload import JobSpec, RequestSpec

__all__ = ["MAX_NUM_SEQS", "Dispatcher", "JobRun", "Req", "Server", "Simulation"]

# vLLM V1's default --max-num-seqs for the API server on a GPU with >= 70 GiB.
MAX_NUM_SEQS = 1024


class Req:
    """One model request while it is simulated."""

    __slots__ = (
        "alloc",
        "computed",
        "dependents",
        "finished_at",
        "generated",
        "id",
        "job",
        "pending",
        "preemptions",
        "ready_at",
        "recomputed",
        "running",
        "seq",
        "server",
        "spec",
        "started_at",
        "wait",
        "waiting_since",
    )

    def __init__(self, job: JobRun, spec: RequestSpec, seq: int) -> None:
        self.job = job
        self.spec = spec
        self.id = f"{job.spec.id}.{spec.index}"
        self.seq = seq
        self.generated = 0
        self.computed = 0
        self.alloc = 0
        self.pending = len(spec.deps)
        self.dependents: list[Req] = []
        self.ready_at: float | None = None
        self.waiting_since: float | None = None
        self.wait = 0.0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.preemptions = 0
        self.recomputed = 0
        self.running = False
        self.server: Server | None = None

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def kv_bytes(self) -> int:
        return self.spec.kv_bytes

    @property
    def priority(self) -> tuple[int, int]:
        """vLLM priority mode: smaller runs first and is preempted last."""
        return (self.spec.planned_tokens, self.seq)

    def decoding(self) -> bool:
        return self.computed >= self.spec.prompt + self.generated


@dataclass(eq=False)
class JobRun:
    spec: JobSpec
    requests: list[Req] = field(default_factory=list)
    finished_at: float | None = None
    remaining: int = 0


@dataclass
class _Step:
    start: float
    end: float
    items: list[tuple[Req, int, bool]]
    """(request, tokens scheduled, decoding)."""


class Server:
    """One vLLM replica."""

    def __init__(
        self,
        id: str,
        role: str,
        model: ServiceModel,
        kv_cache_bytes: int,
        *,
        priority: bool = False,
        max_num_seqs: int = MAX_NUM_SEQS,
    ) -> None:
        self.id = id
        self.role = role
        self.model = model
        self.kv_cache_bytes = kv_cache_bytes
        self.usable = model.usable_bytes(kv_cache_bytes)
        self.priority_mode = priority
        self.max_num_seqs = max_num_seqs
        self.running: list[Req] = []
        self._fifo: deque[Req] = deque()
        self._heap: list[tuple[tuple[int, int], Req]] = []
        self.used = 0
        self.peak_used = 0
        self.step: _Step | None = None
        self.kv_byte_seconds = 0.0
        self.busy_s = 0.0
        self.steps = 0
        self.preemptions = 0
        self.recomputed_tokens = 0
        self.outstanding = 0

    # -- queue ---------------------------------------------------------------------

    def _waiting_len(self) -> int:
        return len(self._heap) if self.priority_mode else len(self._fifo)

    def _peek(self) -> Req:
        return self._heap[0][1] if self.priority_mode else self._fifo[0]

    def _pop(self) -> None:
        if self.priority_mode:
            heapq.heappop(self._heap)
        else:
            self._fifo.popleft()

    def _push(self, req: Req, front: bool) -> None:
        if self.priority_mode:
            heapq.heappush(self._heap, (req.priority, req))
        elif front:
            self._fifo.appendleft(req)
        else:
            self._fifo.append(req)

    def has_work(self) -> bool:
        return bool(self.running) or self._waiting_len() > 0

    def submit(self, req: Req) -> None:
        """Queue a request; it is considered at the next step boundary, as in vLLM."""
        req.server = self
        self.outstanding += 1
        self._push(req, front=False)

    # -- one step ------------------------------------------------------------------

    def _preempt(self, victim: Req, now: float, scheduled: dict[Req, int]) -> int:
        """Free the victim's blocks and queue it again; returns budget given back."""
        self.running.remove(victim)
        victim.running = False
        self.used -= victim.alloc
        victim.alloc = 0
        victim.preemptions += 1
        victim.recomputed += victim.computed
        self.preemptions += 1
        self.recomputed_tokens += victim.computed
        victim.computed = 0
        victim.waiting_since = now
        self._push(victim, front=True)
        return scheduled.pop(victim, 0)

    def _victim(self) -> Req:
        if self.priority_mode:
            return max(self.running, key=lambda r: r.priority)
        return self.running[-1]

    def start_step(self, now: float) -> _Step | None:
        """Schedule the next step at `now`; None when there is nothing to run."""
        for _ in range(2):
            step = self._schedule(now)
            if step is not None:
                self.step = step
                self.steps += 1
                return step
            if not self.has_work():
                return None
            # Everything running was preempted, so nothing was admitted in this
            # pass (vLLM admits nothing in a step that preempted): the next pass does.
        raise AssertionError(f"{self.id}: work that can never be scheduled")

    def _schedule(self, now: float) -> _Step | None:  # noqa: C901
        model = self.model
        budget = model.token_budget
        scheduled: dict[Req, int] = {}
        preempted = False
        for req in list(self.running):
            if budget <= 0:
                break
            if not req.running:
                continue  # preempted earlier in this pass
            n = 1 if req.decoding() else min(req.spec.prompt + req.generated - req.computed, budget)
            new = model.occupancy(req.computed + n, n)
            while new - req.alloc > self.usable - self.used:
                victim = self._victim()
                budget += self._preempt(victim, now, scheduled)
                preempted = True
                if victim is req:
                    break
            if not req.running:
                continue
            self.used += new - req.alloc
            req.alloc = new
            scheduled[req] = n
            budget -= n
        if not preempted:
            while self._waiting_len() and budget > 0 and len(self.running) < self.max_num_seqs:
                req = self._peek()
                n = min(req.spec.prompt + req.generated, budget)
                new = model.occupancy(n, n)
                if new > self.usable - self.used:
                    break
                self._pop()
                req.running = True
                self.running.append(req)
                if req.waiting_since is not None:
                    req.wait += now - req.waiting_since
                    req.waiting_since = None
                if req.started_at is None:
                    req.started_at = now
                self.used += new
                req.alloc = new
                scheduled[req] = n
                budget -= n
        if not scheduled:
            return None
        self.peak_used = max(self.peak_used, self.used)
        items = [(r, n, r.decoding()) for r, n in scheduled.items()]
        compute = 0.0
        kv_read = 0
        for r, n, decoding in items:
            compute += model.compute_s(r.computed, n)
            if decoding:
                kv_read += r.alloc
        memory = model.floor_s + model.kv_read_s_per_byte * kv_read
        return _Step(now, now + max(compute, memory), items)

    def finish_step(self, now: float) -> list[Req]:
        """Apply the step that ends at `now`; returns the requests it finished."""
        step = self.step
        assert step is not None and step.end == now
        self.step = None
        duration = step.end - step.start
        self.busy_s += duration
        # Blocks are taken when a step is scheduled and freed when the next one is,
        # or when a request finishes: constant for the whole step.
        self.kv_byte_seconds += self.used * duration
        finished = []
        for r, n, decoding in step.items:
            r.computed += n
            if decoding:
                r.generated += 1
            if r.generated >= r.spec.output:
                self.running.remove(r)
                r.running = False
                self.used -= r.alloc
                r.alloc = 0
                r.finished_at = now
                self.outstanding -= 1
                finished.append(r)
        return finished


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
