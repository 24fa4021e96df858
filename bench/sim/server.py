"""One vLLM replica on a simulated clock: its waiting queue, its KV pool and the steps
it schedules.

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
from dataclasses import dataclass

from bench.sim.jobs import Req
from bench.sim.perf import ServiceModel

__all__ = ["MAX_NUM_SEQS", "Server"]

# vLLM V1's default --max-num-seqs for the API server on a GPU with >= 70 GiB.
MAX_NUM_SEQS = 1024


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
