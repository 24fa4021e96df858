"""The workload: documents, their plans from the real router, and when they arrive.

Document lengths are log-uniform between `min_tokens` and `max_tokens` (as many
10K-token documents as 1M-token ones). Every job is routed by `plan_route` against
the deployment's backends, exactly as `longdoc route` does; documents beyond every
backend are split by a page chunker over synthetic pages (whole pages packed up to
the router's budget, which is what `ingestion.capacity.chunking` does with real text).

Arrivals: `burstiness` of the jobs arrive in bursts of `burst_size` at one instant,
the rest independently uniform (a Poisson stream, given its count); all within a
span chosen so that the offered work is `load` times what the busiest role's
replicas can do in it.

Each request also gets the output it will actually produce (log-uniform between
`min_output` and the plan's budget): the router and the ledger only know the
budget, so reservations and estimates use it, while the servers generate the
actual count. A reduce's prompt is its task prompt plus the actual answers it
combines (each with the router's per-part heading), not the budgeted maximum.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from bench.sim.perf import ServiceModel
from ingestion.capacity.route_plan import Chunk, Plan, Request
from ingestion.capacity.router import Backend, Job, plan_route
from ingestion.types import TokenCount

__all__ = ["JobSpec", "RequestSpec", "Workload", "WorkloadParams", "generate", "page_chunker"]


@dataclass(frozen=True)
class WorkloadParams:
    jobs: int = 300
    seed: int = 0
    min_tokens: int = 1_000
    max_tokens: int = 8_000_000
    burstiness: float = 0.3
    burst_size: int = 20
    load: float = 1.0
    max_output_tokens: int = 4096
    min_output_tokens: int = 128
    prompt_tokens: int = 200
    """Task prompt plus chat template (route_cli's TEMPLATE_TOKENS is 64 of it)."""

    def __post_init__(self) -> None:
        if self.jobs <= 0:
            raise ValueError("jobs must be positive")
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ValueError("need 0 < min_tokens <= max_tokens")
        if not 0.0 <= self.burstiness <= 1.0:
            raise ValueError("burstiness must be in [0, 1]")
        if self.burst_size <= 0 or self.load <= 0:
            raise ValueError("burst size and load must be positive")
        if not 0 < self.min_output_tokens <= self.max_output_tokens:
            raise ValueError("need 0 < min_output_tokens <= max_output_tokens")


@dataclass(frozen=True)
class RequestSpec:
    index: int
    role: str
    planned_input: int
    """Input tokens the plan budgeted (for a reduce: every answer at its maximum)."""
    max_output: int
    prompt: int
    """Input tokens actually sent."""
    output: int
    """Tokens actually generated."""
    kv_bytes: int
    """The plan's reservation: what the ledger leases."""
    replicas: tuple[str, ...]
    deps: tuple[int, ...]
    """Indexes of the requests whose answers this one combines."""

    @property
    def planned_tokens(self) -> int:
        return self.planned_input + self.max_output


@dataclass(frozen=True)
class JobSpec:
    id: int
    doc_tokens: int
    arrival: float
    kind: str
    requests: tuple[RequestSpec, ...]
    tenant: str = ""


@dataclass(frozen=True)
class Workload:
    params: WorkloadParams
    jobs: tuple[JobSpec, ...]
    span_s: float


def page_chunker(doc_tokens: int, rng: random.Random) -> _PageChunker:
    return _PageChunker(doc_tokens, rng)


class _PageChunker:
    """`router.Chunker` over synthetic pages of 200-1,200 tokens, packed greedily
    into runs of whole pages, one separator token between pages."""

    def __init__(self, doc_tokens: int, rng: random.Random) -> None:
        self.doc_tokens = doc_tokens
        self.seed = rng.getrandbits(64)

    @cached_property
    def pages(self) -> list[int]:
        # Drawn only for the documents the router actually splits.
        rng = random.Random(self.seed)
        pages: list[int] = []
        left = self.doc_tokens
        while left > 0:
            n = min(left, rng.randint(200, 1200))
            pages.append(n)
            left -= n
        return pages

    def __call__(self, role: str, budget: int) -> list[Chunk]:
        chunks: list[Chunk] = []
        first, tokens = 0, 0
        for i, n in enumerate(self.pages):
            if tokens and tokens + 1 + n > budget:
                chunks.append(self._chunk(len(chunks), first, i - 1, tokens))
                first, tokens = i, 0
            tokens = n if not tokens else tokens + 1 + n
        chunks.append(self._chunk(len(chunks), first, len(self.pages) - 1, tokens))
        return chunks

    @staticmethod
    def _chunk(index: int, first: int, last: int, tokens: int) -> Chunk:
        # Offsets are not used without a text file; the counts are what matters.
        return Chunk(index, first + 1, last + 1, 0, 0, 0, 0, tokens, True)


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return min(hi, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))


def _requests(
    plan: Plan, part_overhead: int, params: WorkloadParams, rng: random.Random
) -> tuple[RequestSpec, ...]:
    out: list[RequestSpec] = []

    def add(r: Request, prompt: int, deps: tuple[int, ...] = ()) -> int:
        actual = _log_uniform(rng, min(params.min_output_tokens, r.output_tokens), r.output_tokens)
        spec = RequestSpec(
            len(out), r.role, r.input_tokens, r.output_tokens, prompt, actual, r.kv_bytes,
            r.replicas, deps,
        )  # fmt: skip
        out.append(spec)
        return spec.index

    if plan.request is not None:
        add(plan.request, plan.request.input_tokens)
        return tuple(out)
    prompts = dict(plan.prompt_tokens)
    previous = [add(s.request, s.request.input_tokens) for s in plan.map]
    for level in plan.reduce:
        current = []
        for g in level.groups:
            deps = tuple(previous[g.first : g.last + 1])
            # The router budgets every answer at max_output_tokens; the reduce is sent
            # the answers as they came back.
            prompt = prompts[g.request.role] + sum(out[d].output + part_overhead for d in deps)
            assert prompt <= g.request.input_tokens
            current.append(add(g.request, prompt, deps))
        previous = current
    return tuple(out)


def generate(
    params: WorkloadParams,
    backends: Sequence[Backend],
    models: Mapping[str, ServiceModel],
    replicas_per_role: Mapping[str, int],
) -> Workload:
    """Jobs in arrival order; `models` maps a role to its service model (for `load`)."""
    rng = random.Random(params.seed)
    planned: list[tuple[int, str, tuple[RequestSpec, ...]]] = []
    for _ in range(params.jobs):
        n = _log_uniform(rng, params.min_tokens, params.max_tokens)
        counts = {role: TokenCount(n, True, "synthetic", "tokenizer") for role in models}
        prompts = {role: params.prompt_tokens for role in models}
        job = Job(counts, prompts, params.max_output_tokens)
        job_rng = random.Random(rng.getrandbits(64))
        plan = plan_route(job, backends, page_chunker(n, job_rng))
        planned.append((n, plan.kind, _requests(plan, job.part_overhead_tokens, params, job_rng)))

    work: dict[str, float] = dict.fromkeys(models, 0.0)
    for _, _, reqs in planned:
        for r in reqs:
            work[r.role] += models[r.role].work_s(r.prompt, r.output)
    span = max(w / replicas_per_role[role] for role, w in work.items()) / params.load

    n_burst = round(params.burstiness * params.jobs)
    times = [rng.uniform(0.0, span) for _ in range(params.jobs - n_burst)]
    for start in range(0, n_burst, params.burst_size):
        at = rng.uniform(0.0, span)
        times += [at] * min(params.burst_size, n_burst - start)
    # Which jobs arrive in a burst is independent of their size.
    rng.shuffle(times)
    origin = min(times)
    jobs = [(t - origin, n, kind, reqs) for t, (n, kind, reqs) in zip(times, planned, strict=True)]
    jobs.sort(key=lambda j: j[0])
    return Workload(
        params,
        tuple(JobSpec(i, n, t, kind, reqs) for i, (t, n, kind, reqs) in enumerate(jobs)),
        span,
    )
