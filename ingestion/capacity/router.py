"""The router: which model runs a job, and how, from its real token counts.

A job's request is L = document + task prompt + max output tokens, counted
with each role's own tokenizer. Backend classes (same role, model and KV
settings) are tried in order, Gemma before Scout (the smallest model first);
the first class where some healthy replica holds L, by its `max_model_len`
AND by its KV pool (`kv_pool.fits`, the same check vLLM makes), runs the job
as one request. A replica whose context or pool is unknown holds nothing:
capacity is never assumed.

When no class holds the job, the document is split (`Chunker`) for the class
that takes the largest request, so there are as few chunks as possible, and
each chunk becomes a map request there. Their answers (each at most
max_output_tokens, plus `part_overhead_tokens` for the heading that labels it)
are combined by reduce requests, routed like a job of that size; when all of
them do not fit in one request they are reduced in groups, level by level.

Pure: no I/O. The KV numbers are `ingestion.capacity.kv`'s (per GPU under tensor
parallelism, as vLLM reports its pool).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingestion.capacity.backend_class import GIB, ROLE_ORDER, Backend, BackendClass, backend_classes
from ingestion.capacity.route_plan import (
    Chunk,
    DocTokens,
    MapStep,
    Plan,
    ReduceGroup,
    ReduceLevel,
    Rejection,
    Request,
    RouteRefused,
)
from ingestion.types import TokenCount

__all__ = ["ROLE_ORDER", "Backend", "Chunker", "Job", "plan_route"]


@dataclass(frozen=True)
class Job:
    document: Mapping[str, TokenCount]
    prompt_tokens: Mapping[str, int]
    max_output_tokens: int
    part_overhead_tokens: int = 32
    """Tokens around each part in a reduce prompt (its "[pages 3-9]" heading)."""


class Chunker(Protocol):
    def __call__(self, role: str, budget: int) -> Sequence[Chunk]:
        """Chunks of at most `budget` tokens by `role`'s tokenizer; may raise RouteRefused."""
        ...


def _check(job: Job, backends: Sequence[Backend]) -> None:
    out = job.max_output_tokens
    if isinstance(out, bool) or not isinstance(out, int) or out <= 0:
        raise ValueError(f"max_output_tokens must be a positive integer, not {out!r}")
    contexts = [b.max_model_len for b in backends if b.max_model_len is not None]
    if contexts and out >= max(contexts):
        raise ValueError(
            f"max_output_tokens {out:,} leaves no room for any input: the largest "
            f"context of any backend is {max(contexts):,} tokens"
        )
    for role, n in job.prompt_tokens.items():
        if n < 0:
            raise ValueError(f"prompt tokens for {role} must be >= 0, not {n}")
    for role, tc in job.document.items():
        if tc.count < 0:
            raise ValueError(f"document tokens for {role} must be >= 0, not {tc.count}")
        if role not in job.prompt_tokens:
            raise ValueError(f"no task prompt count for {role}")
    if job.part_overhead_tokens < 0:
        raise ValueError("part_overhead_tokens must be >= 0")


def _first_fit(
    classes: list[BackendClass], inputs: Mapping[str, int], out: int, rejected: list[Rejection]
) -> Request | None:
    """The first class (smallest model first) that holds input + out; records the rest."""
    for c in classes:
        if c.role not in inputs:
            rejected.append(Rejection(c.role, c.model, (), f"{c.role}: no token count"))
            continue
        req = c.request(inputs[c.role], out)
        if req is not None:
            return req
        rejected.append(c.rejection(inputs[c.role] + out))
    return None


def _describe(req: Request, what: str) -> str:
    return (
        f"{what} on {req.role} ({req.model}): {req.input_tokens:,} input + "
        f"{req.output_tokens:,} output = {req.total_tokens:,} tokens, reserving "
        f"{req.kv_bytes / GIB:.2f} GiB of KV ({req.kv_blocks:,} blocks) on one of "
        f"{', '.join(req.replicas)}"
    )


def plan_route(job: Job, backends: Sequence[Backend], chunker: Chunker | None = None) -> Plan:
    """Route one job; raises ValueError for bad budgets, RouteRefused when it cannot run."""
    _check(job, backends)
    out = job.max_output_tokens
    classes = backend_classes(backends)
    if not classes:
        raise RouteRefused("no_backend", "no backend is configured")
    document = tuple(DocTokens(r, tc.count, tc.exact, tc.model) for r, tc in job.document.items())
    prompts = tuple((r, job.prompt_tokens[r]) for r in job.document)
    inputs = {r: tc.count + job.prompt_tokens[r] for r, tc in job.document.items()}
    reasons = [
        "smallest model first: each backend class in order (gemma, then scout) "
        "must hold the whole request in max_model_len and in one replica's KV pool"
    ]
    reasons += [
        f"{r}'s count is an estimate ({tc.tokenizer}); the server may count more"
        for r, tc in job.document.items()
        if not tc.exact
    ]
    rejected: list[Rejection] = []
    single = _first_fit(classes, inputs, out, rejected)
    if single is not None:
        reasons.append(_describe(single, "one request"))
        return Plan("single", out, document, prompts, single, (), (), tuple(reasons),
                    tuple(rejected))  # fmt: skip
    usable = [c for c in classes if c.role in job.prompt_tokens and c.best > 0]
    if not usable:
        why = "no healthy backend has a known context and KV pool that holds a request"
        raise RouteRefused("no_backend", why, tuple(rejected))
    # Map where one request takes the most text: the fewest chunks.
    target = max(usable, key=lambda c: c.best - job.prompt_tokens[c.role])
    budget = target.best - job.prompt_tokens[target.role] - out
    if budget <= 0 or chunker is None:
        why = f"leaves {budget:,} tokens for text" if budget <= 0 else "has no page text here"
        raise RouteRefused("unsplittable", f"the job fits no backend; splitting {why}",
                           tuple(rejected))  # fmt: skip
    try:
        chunks = chunker(target.role, budget)
    except RouteRefused as exc:
        raise RouteRefused(exc.code, exc.reason, tuple(rejected)) from exc
    if not chunks:
        raise RouteRefused("unsplittable", "no page text to split", tuple(rejected))
    steps = []
    for chunk in chunks:
        req = target.request(job.prompt_tokens[target.role] + chunk.tokens, out)
        assert req is not None, "a chunk within the budget fits its class"
        steps.append(MapStep(chunk, req))
    reasons.append(
        f"no single request fits: split for {target.role} ({target.model}), whose largest "
        f"request is {target.best:,} tokens, into {len(steps)} chunks of at most {budget:,} "
        f"tokens of text at page/paragraph boundaries"
    )
    levels = _reduce(job, classes, usable, len(steps), reasons, rejected)
    return Plan("map_reduce", out, document, prompts, None, tuple(steps), levels,
                tuple(reasons), tuple(rejected))  # fmt: skip


def _reduce(
    job: Job,
    classes: list[BackendClass],
    usable: list[BackendClass],
    parts: int,
    reasons: list[str],
    rejected: list[Rejection],
) -> tuple[ReduceLevel, ...]:
    out, per_part = job.max_output_tokens, job.max_output_tokens + job.part_overhead_tokens
    levels: list[ReduceLevel] = []
    while parts > 1:
        inputs = {r: n + parts * per_part for r, n in job.prompt_tokens.items()}
        whole = _first_fit(classes, inputs, out, [])
        if whole is not None:
            levels.append(ReduceLevel(len(levels) + 1, (ReduceGroup(0, parts - 1, whole),)))
            reasons.append(_describe(whole, f"reduce of {parts} answers"))
            return tuple(levels)
        # The most answers any class takes at once; below two there is no progress.
        fan_in = max((c.best - job.prompt_tokens[c.role] - out) // per_part for c in usable)
        if fan_in < 2:
            raise RouteRefused(
                "reduce_too_large",
                f"no backend can combine even two answers of up to {out:,} tokens "
                "each: lower max_output_tokens",
                tuple(rejected),
            )
        n_groups = -(-parts // fan_in)
        bounds = [parts * g // n_groups for g in range(n_groups + 1)]
        groups = []
        for a, b in itertools.pairwise(bounds):
            inputs = {r: n + (b - a) * per_part for r, n in job.prompt_tokens.items()}
            req = _first_fit(classes, inputs, out, [])
            assert req is not None, "a group within the fan-in fits some class"
            groups.append(ReduceGroup(a, b - 1, req))
        levels.append(ReduceLevel(len(levels) + 1, tuple(groups)))
        reasons.append(
            f"reduce level {len(levels)}: {parts} answers do not fit one request; "
            f"combined in {n_groups} groups of at most {fan_in}"
        )
        parts = n_groups
    if parts == 1 and not levels:
        reasons.append("one chunk: its answer is the result, no reduce")
    return tuple(levels)
