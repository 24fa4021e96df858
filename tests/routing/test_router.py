"""Hand-worked plans on the paper deployment and on small ones built to hit each rule.

KV figures are worked out with vLLM's formula (../shared/models/models.yaml,
vllm_kv_formula) and also checked against ingestion.capacity.kv.reserve:
  Gemma 4 31B, TP1, bf16, F = 16,384: 2,621,440 B x (ceil(L/32) + 5 x (ceil(min(17,407, L)/16) + 1))
  Scout, TP8, bf16, F = 16,384:          98,304 B x (ceil(L/16) + 3 x ceil(min(24,576, L)/16))
"""

from __future__ import annotations

import io

import pytest

from ingestion.capacity.chunking import PageChunker
from ingestion.capacity.kv import KvConfig, kv_layout, reserve
from ingestion.capacity.pool import fits, max_model_len
from ingestion.capacity.registry import get_model
from ingestion.capacity.route_plan import RouteRefused
from ingestion.capacity.router import Backend, Job, plan_route
from ingestion.documents.textfile import PageSpan, write_pages
from ingestion.tokens.counting import TokenCounter
from ingestion.types import PageText, TokenCount

GEMMA = "google/gemma-4-31B-it"
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"
BIG_POOL = 1 << 40


def job(gemma: int, scout: int | None = None, *, out: int = 4096, prompt: int = 100) -> Job:
    tc = {
        "gemma": TokenCount(gemma, True, "test", "tokenizer"),
        "scout": TokenCount(gemma if scout is None else scout, True, "test", "tokenizer"),
    }
    return Job(tc, {"gemma": prompt, "scout": prompt}, out)


def synthetic(pages: int, tokens: int = 1000) -> list[tuple[PageSpan, str]]:
    """Pages of "a a a ...": `tokens` tokens each on both tokenizers, and the page
    separator is one more token (checked in test_synthetic_counts)."""
    text = "a" + " a" * (tokens - 1)
    spans = write_pages([PageText(i + 1, text) for i in range(pages)], io.BytesIO())
    return [(s, text) for s in spans]


def test_synthetic_counts(scout: TokenCounter, gemma: TokenCounter) -> None:
    text = synthetic(1)[0][1]
    for counter in (scout, gemma):
        assert counter.count(text) == 1000
        assert counter.count(text + "\n\n" + text) == 2001


def test_paper_deployment_numbers(paper: list[Backend]) -> None:
    g, s = paper
    assert (g.id, g.model, g.max_model_len, g.kv_cache_bytes) == (
        "gemma-0",
        GEMMA,
        262_144,
        44_224_741_376,
    )
    assert (s.id, s.model, s.max_model_len, s.kv_cache_bytes, s.kv.tp) == (
        "scout-0",
        SCOUT,
        1_000_000,
        50_059_411_328,
        8,
    )
    g_layout = kv_layout(get_model(GEMMA), g.kv)
    # FP8 weights: the pool holds the full 256K context, 1.24 requests of it.
    assert max_model_len(g_layout, 44_224_741_376, 262_144) == 262_144
    # bf16 weights (59.0 GiB) would leave 13.0 GiB: 15,456 tokens, not 256K.
    assert max_model_len(g_layout, 77_309_411_328 - 59 * 2**30, 262_144) == 15_456
    s_layout = kv_layout(get_model(SCOUT), s.kv)
    assert max_model_len(s_layout, 50_059_411_328, 10_485_760) == 8_073_936
    assert fits(s_layout, 1_000_000, 50_059_411_328)


def test_30k_tokens_run_on_gemma(paper: list[Backend]) -> None:
    plan = plan_route(job(30_000), paper)
    assert plan.kind == "single" and plan.request is not None
    req = plan.request
    assert (req.role, req.model, req.input_tokens, req.output_tokens) == (
        "gemma",
        GEMMA,
        30_100,
        4096,
    )
    # L = 34,196: ceil(34,196/32) = 1,069 full + 5 x (1,088 + 1) sliding = 6,514 blocks.
    assert req.kv_blocks == 6_514
    assert req.kv_bytes == 6_514 * 2_621_440 == reserve(get_model(GEMMA), 34_196).bytes_per_request
    assert req.replicas == ("gemma-0",)
    assert plan.rejected == ()
    assert plan.map == () and plan.reduce == ()


def test_400k_tokens_run_on_scout_with_the_exact_kv(paper: list[Backend]) -> None:
    plan = plan_route(job(412_345, 400_000), paper)
    assert plan.kind == "single" and plan.request is not None
    req = plan.request
    assert (req.role, req.model, req.total_tokens) == ("scout", SCOUT, 404_196)
    # ceil(404,196/16) = 25,263 full + 3 x 1,536 chunked = 29,871 blocks of 98,304 B.
    expected = reserve(get_model(SCOUT), 404_196, KvConfig(tp=8))
    assert req.kv_blocks == expected.blocks_per_request == 29_871
    assert req.kv_bytes == expected.bytes_per_request == 29_871 * 98_304
    assert [r.reason for r in plan.rejected] == ["gemma: 416,541 tokens > max_model_len 262,144"]


def test_3m_tokens_map_reduce_on_scout_then_reduce_on_gemma(
    paper: list[Backend], scout: TokenCounter
) -> None:
    pages = synthetic(3_000)
    whole = 3_000 * 1000 + 2_999  # pages + one token per separator
    plan = plan_route(job(whole), paper, PageChunker(pages, {"scout": scout}))
    assert plan.kind == "map_reduce"
    # Chunk budget 1,000,000 - 100 - 4,096 = 995,804; 994 pages take 994,993 tokens.
    ranges = [(s.chunk.first_page, s.chunk.last_page, s.chunk.tokens) for s in plan.map]
    assert ranges == [
        (1, 994, 994_993),
        (995, 1988, 994_993),
        (1989, 2982, 994_993),
        (2983, 3000, 18_017),
    ]
    for step in plan.map:
        assert step.request.role == "scout"
        assert step.request.total_tokens <= 1_000_000
        assert step.request.input_tokens == step.chunk.tokens + 100
        assert step.chunk.exact
    # The four answers: 4 x (4,096 + 32) + 100 = 16,612 in, 20,708 in all, on Gemma.
    (level,) = plan.reduce
    (group,) = level.groups
    assert (group.first, group.last) == (0, 3)
    assert (group.request.role, group.request.input_tokens, group.request.total_tokens) == (
        "gemma",
        16_612,
        20_708,
    )
    # ceil(20,708/32) = 648 full + 5 x 1,089 sliding = 6,093 blocks.
    assert group.request.kv_bytes == 6_093 * 2_621_440
    assert {r.role for r in plan.rejected} == {"gemma", "scout"}


def test_the_output_budget_pushes_a_borderline_document_to_scout(paper: list[Backend]) -> None:
    on_gemma = plan_route(job(258_000, out=4_000), paper)  # 262,100 tokens
    assert on_gemma.request is not None and on_gemma.request.role == "gemma"
    on_scout = plan_route(job(258_000, out=4_096), paper)  # 262,196 tokens
    assert on_scout.request is not None and on_scout.request.role == "scout"
    assert on_scout.rejected[0].reason == "gemma: 262,196 tokens > max_model_len 262,144"


def test_unknown_capacity_is_never_chosen() -> None:
    backends = [
        Backend("g-unknown", "gemma", GEMMA, 262_144, None),
        Backend("g-nolen", "gemma", GEMMA, None, BIG_POOL),
        Backend("g-down", "gemma", GEMMA, 262_144, BIG_POOL, healthy=False),
        Backend("s", "scout", SCOUT, 1_000_000, BIG_POOL, kv=KvConfig(tp=8)),
    ]
    plan = plan_route(job(1_000), backends)
    assert plan.request is not None and plan.request.replicas == ("s",)
    (rejection,) = plan.rejected
    assert "KV capacity unknown" in rejection.reason
    assert "max_model_len unknown" in rejection.reason
    assert "down" in rejection.reason
    with pytest.raises(RouteRefused) as err:
        plan_route(job(1_000), backends[:3])
    assert err.value.code == "no_backend"


def test_pool_given_in_blocks_and_a_pool_too_small() -> None:
    layout = kv_layout(get_model(GEMMA))
    blocks = 44_224_741_376 // layout.bytes_per_block  # 16,870
    by_blocks = [Backend("g", "gemma", GEMMA, 262_144, kv_cache_blocks=blocks)]
    plan = plan_route(job(250_000), by_blocks)
    assert plan.request is not None and plan.request.replicas == ("g",)

    small = [
        Backend("g", "gemma", GEMMA, 262_144, 20 * 2**30),
        Backend("s", "scout", SCOUT, 1_000_000, BIG_POOL, kv=KvConfig(tp=8)),
    ]
    plan = plan_route(job(100_000), small)
    assert plan.request is not None and plan.request.role == "scout"
    held = max_model_len(layout, 20 * 2**30, 262_144)
    # (3,257 full + 5,445 sliding) x 2,621,440 B = 22,811,770,880 B = 21.25 GiB
    assert plan.rejected[0].reason == (
        f"gemma: 104,196 tokens need 21.25 GiB of KV; its pool of 20.00 GiB holds at "
        f"most {held:,} tokens"
    )


def test_only_the_replicas_that_hold_the_request_are_listed() -> None:
    backends = [
        Backend("g-small", "gemma", GEMMA, 262_144, 20 * 2**30),
        Backend("g-big", "gemma", GEMMA, 262_144, 44_224_741_376),
    ]
    plan = plan_route(job(100_000), backends)
    assert plan.request is not None and plan.request.replicas == ("g-big",)


def test_an_unsplittable_oversize_job_is_refused(scout: TokenCounter) -> None:
    backends = [Backend("s", "scout", SCOUT, 20_000, BIG_POOL)]
    pages = synthetic(1, tokens=30_000)  # one line, no break to cut at
    with pytest.raises(RouteRefused) as err:
        plan_route(job(30_000), backends, PageChunker(pages, {"scout": scout}))
    assert err.value.code == "unsplittable"
    assert "page 1" in err.value.reason and "30,000 tokens" in err.value.reason
    assert [r.reason for r in err.value.rejected] == ["scout: 34,196 tokens > max_model_len 20,000"]
    assert not isinstance(err.value, ValueError)  # a job failure, not a bad request
    with pytest.raises(RouteRefused, match="no page text"):
        plan_route(job(30_000), backends)


@pytest.mark.parametrize("out", [0, -1, -4096, 1_000_000, 10**12, True])
def test_absurd_output_budgets_are_value_errors(paper: list[Backend], out: int) -> None:
    with pytest.raises(ValueError, match="max_output_tokens"):
        plan_route(job(1_000, out=out), paper)


def test_negative_counts_are_value_errors(paper: list[Backend]) -> None:
    with pytest.raises(ValueError, match="prompt tokens"):
        plan_route(job(1_000, prompt=-1), paper)
    with pytest.raises(ValueError, match="document tokens"):
        plan_route(job(-5), paper)


def test_a_reduce_that_cannot_combine_two_answers_is_refused(scout: TokenCounter) -> None:
    backends = [Backend("g", "gemma", GEMMA, 10_000, BIG_POOL)]
    pages = synthetic(50)
    # Chunks fit (5,900 tokens of text each), but 2 x 4,032 + 100 + 4,000 > 10,000.
    with pytest.raises(RouteRefused) as err:
        plan_route(job(50_049, out=4_000), backends, PageChunker(pages, {"gemma": scout}))
    assert err.value.code == "reduce_too_large"


def test_answers_are_reduced_in_levels_when_they_do_not_fit_one_request(
    scout: TokenCounter,
) -> None:
    backends = [Backend("g", "gemma", GEMMA, 20_000, BIG_POOL)]
    pages = synthetic(400)
    plan = plan_route(job(400_399, out=1_000), backends, PageChunker(pages, {"gemma": scout}))
    # 18,900 tokens of text per chunk = 18 pages; 400 pages -> 23 chunks. One reduce
    # takes (20,000 - 100 - 1,000) // 1,032 = 18 answers: 23 -> 2 groups -> 1.
    assert len(plan.map) == 23
    assert [len(level.groups) for level in plan.reduce] == [2, 1]
    first, second = plan.reduce
    assert [(g.first, g.last) for g in first.groups] == [(0, 10), (11, 22)]
    assert [(g.first, g.last) for g in second.groups] == [(0, 1)]
    for req in plan.requests():
        assert req.total_tokens <= 20_000


def test_a_backend_of_an_unknown_model_is_rejected_not_fatal() -> None:
    backends = [
        Backend("x", "gemma", "no/such-model", 262_144, BIG_POOL),
        Backend("s", "scout", SCOUT, 1_000_000, BIG_POOL, kv=KvConfig(tp=8)),
    ]
    plan = plan_route(job(1_000), backends)
    assert plan.request is not None and plan.request.role == "scout"
    assert "unknown model 'no/such-model'" in plan.rejected[0].reason
