"""Properties of chunking and routing, on generated documents and deployments,
counted with the real Llama 4 tokenizer (fast enough to count every example)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingestion.capacity.chunking import PageChunker, Unsplittable, chunk_pages
from ingestion.capacity.kv import KvConfig, kv_layout, reserve
from ingestion.capacity.pool import fits
from ingestion.capacity.registry import get_model
from ingestion.capacity.route_plan import Plan, RouteRefused
from ingestion.capacity.router import Backend, Job, plan_route
from ingestion.documents.textfile import PageSpan, write_pages
from ingestion.tokens.counting import TokenCounter
from ingestion.types import PageText, TokenCount
from tests.examples import examples
from tests.routing.conftest import check_cover, counter_for

WORDS = st.sampled_from(
    ["the", "a", "kernel", "Straße", "naïve", "数据", "42", "x=1;", "(see", "p. 7)", " ", "-"]
)
LINE = st.lists(WORDS, min_size=0, max_size=12).map(" ".join)
PARAGRAPH = st.lists(LINE, min_size=1, max_size=4).map("\n".join)
PAGE = st.one_of(
    st.just(""),
    st.lists(PARAGRAPH, min_size=1, max_size=10).map("\n\n".join),
    st.lists(PARAGRAPH, min_size=1, max_size=3).map(lambda ps: "\n\n\n".join(ps) + "\n"),
)
DOC = st.lists(PAGE, min_size=1, max_size=12)


def build(texts: Sequence[str]) -> tuple[str, bytes, list[tuple[PageSpan, str]]]:
    buf = io.BytesIO()
    spans = write_pages([PageText(i + 1, t) for i, t in enumerate(texts)], buf)
    data = buf.getvalue()
    full = data.decode("utf-8")
    return full, data, [(s, full[s.char_start : s.char_end]) for s in spans]


@settings(
    max_examples=examples(100, 150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(texts=DOC, budget=st.integers(min_value=8, max_value=400))
def test_chunks_are_exact_fit_and_cover_the_pages_in_order(texts: list[str], budget: int) -> None:
    counter = _scout()
    full, data, pages = build(texts)
    try:
        chunks = chunk_pages(pages, counter, budget)
    except Unsplittable as exc:
        assert exc.tokens > exc.budget == budget
        event("unsplittable")
        return
    event("split pages" if any(c.parts for c in chunks) else "whole pages")
    check_cover(chunks, full, pages)
    for c in chunks:
        text = full[c.char_start : c.char_end]
        assert c.tokens <= budget
        assert c.exact and counter.count(text) == c.tokens
        assert data[c.byte_start : c.byte_end].decode("utf-8") == text


MODELS = {
    "gemma": ["google/gemma-4-31B-it", "google/gemma-4-E4B-it"],
    "scout": ["meta-llama/Llama-4-Scout-17B-16E-Instruct"],
}
# role, model choice, max_model_len, pool in blocks (None = unknown), healthy, fp8 KV
BACKEND = st.tuples(
    st.sampled_from(["gemma", "scout"]),
    st.integers(0, 1),
    st.integers(60, 1_200),
    st.one_of(st.integers(2, 800), st.integers(100, 800), st.integers(200, 800), st.none()),
    st.sampled_from([True, True, True, False]),
    st.booleans(),
)
BackendSpec = tuple[str, int, int, int | None, bool, bool]


def _backend(i: int, spec: BackendSpec) -> Backend:
    role, k, length, blocks, healthy, fp8 = spec
    # A small in-flight window, so that sliding and chunked layers matter at these lengths.
    cfg = KvConfig(in_flight_tokens=256, kv_dtype="fp8" if fp8 else "bf16")
    model = MODELS[role][k % len(MODELS[role])]
    return Backend(f"b{i}", role, model, length, kv_cache_blocks=blocks, kv=cfg, healthy=healthy)


def _scout() -> TokenCounter:
    # Not a fixture: hypothesis runs many examples per test call.
    return counter_for("scout")


@settings(
    max_examples=examples(100, 150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    texts=DOC,
    specs=st.lists(BACKEND, min_size=2, max_size=4),
    out=st.integers(1, 100),
    prompt=st.integers(0, 30),
)
def test_every_planned_request_fits_a_replica_and_the_plan_round_trips(
    texts: list[str], specs: list[BackendSpec], out: int, prompt: int
) -> None:
    counter = _scout()
    backends = [_backend(i, spec) for i, spec in enumerate(specs)]
    full, _, pages = build(texts)
    total = counter.count(full)
    counts = {r: TokenCount(total, True, counter.name, "tokenizer") for r in MODELS}
    job = Job(counts, {r: prompt for r in MODELS}, out)
    try:
        plan = plan_route(job, backends, PageChunker(pages, {r: counter for r in MODELS}))
    except ValueError:
        assert out >= max(b.max_model_len or 0 for b in backends)
        return
    except RouteRefused as exc:
        assert exc.code in ("no_backend", "unsplittable", "reduce_too_large")
        event(f"refused: {exc.code}")
        return
    by_id = {b.id: b for b in backends}
    for req in plan.requests():
        assert req.replicas
        for rid in req.replicas:
            b = by_id[rid]
            assert b.healthy and b.role == req.role and b.model == req.model
            assert b.max_model_len is not None and req.total_tokens <= b.max_model_len
            layout = kv_layout(get_model(b.model), b.kv)
            assert b.kv_cache_blocks is not None
            assert fits(layout, req.total_tokens, b.kv_cache_blocks * layout.bytes_per_block)
            assert (
                req.kv_bytes
                == reserve(get_model(b.model), req.total_tokens, b.kv).bytes_per_request
            )
        assert req.output_tokens == out
    event(f"plan {plan.kind}, {len(plan.reduce)} reduce levels")
    if plan.kind == "single":
        assert plan.request is not None and plan.request.input_tokens == total + prompt
    else:
        chunks = [s.chunk for s in plan.map]
        check_cover(chunks, full, pages)
        for step in plan.map:
            assert step.request.input_tokens == step.chunk.tokens + prompt
            assert (
                counter.count(full[step.chunk.char_start : step.chunk.char_end])
                == step.chunk.tokens
            )
        parts = len(chunks)
        for level in plan.reduce:
            firsts = [g.first for g in level.groups]
            lasts = [g.last for g in level.groups]
            assert firsts[0] == 0 and lasts[-1] == parts - 1
            assert all(a == b + 1 for a, b in zip(firsts[1:], lasts, strict=False))
            for g in level.groups:
                assert g.request.input_tokens == prompt + (g.last - g.first + 1) * (out + 32)
            parts = len(level.groups)
        assert parts == 1
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
