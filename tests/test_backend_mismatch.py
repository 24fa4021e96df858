"""`mismatches` (service/backends/mismatch.py) on what the real probe reads from a
server that answers as vLLM does, with /metrics captured from real servers
(tests/fake_vllm.py): what the configuration cannot use is a mismatch, what only asks
less of the server stays an override (`resolve`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ingestion.capacity.kv import KvConfig, kv_layout
from ingestion.capacity.registry import get_model
from service.backends.discovery import resolve
from service.backends.mismatch import mismatches, reason
from service.backends.probe import BackendState, probe
from service.deployment import BackendConfig
from tests.fake_vllm import GEMMA3_ID, SMOLLM2_ID, FakeVllm, captured_metrics

GIB = 1 << 30


@pytest.fixture
def server() -> Iterator[FakeVllm]:
    with FakeVllm(SMOLLM2_ID, 2048) as fake:
        yield fake


def _state(server: FakeVllm, model: str, length: int, metrics: str | None = None) -> BackendState:
    server.serve(model, length, metrics)
    state = probe(server.url, timeout=5)
    assert state.error is None and (state.model, state.max_model_len) == (model, length)
    return state


def _cfg(server: FakeVllm, **values: Any) -> BackendConfig:
    return BackendConfig.model_validate({"role": "gemma", "url": server.url, **values})


def _smollm2_pool() -> int:
    # The captured server: 364 blocks of 128 bf16 tokens in 1 GiB, one held back.
    per_block = kv_layout(get_model(SMOLLM2_ID), KvConfig(block_size=128, kv_dtype="bf16"))
    return 363 * per_block.bytes_per_block


def test_another_registry_model_than_configured_is_a_mismatch(server: FakeVllm) -> None:
    state = _state(server, SMOLLM2_ID, 2048)
    found = mismatches(state, _cfg(server, model=GEMMA3_ID))
    assert found == {"model": {"expected": GEMMA3_ID, "reported": SMOLLM2_ID}}
    assert reason(found) == f"unexpected model: serves {SMOLLM2_ID!r}, configured {GEMMA3_ID!r}"
    assert mismatches(state, _cfg(server, model=SMOLLM2_ID)) == {}
    assert mismatches(state, _cfg(server)) == {}  # nothing configured to compare with
    # An alias is what `model` maps to the registry: it cannot be told wrong.
    alias = _state(server, "smollm2-135m-instruct", 2048, captured_metrics(SMOLLM2_ID))
    assert mismatches(alias, _cfg(server, model=GEMMA3_ID)) == {}


def test_a_longer_configured_context_is_a_mismatch_a_shorter_an_override(
    server: FakeVllm,
) -> None:
    state = _state(server, GEMMA3_ID, 1024)
    longer = _cfg(server, max_model_len=2048)
    found = mismatches(state, longer)
    assert found == {"max_model_len": {"expected": 2048, "reported": 1024}}
    assert reason(found) == "context too short: serves max_model_len 1,024, configured 2,048"
    shorter = _cfg(server, max_model_len=512)
    assert mismatches(state, shorter) == {}
    assert resolve(state, shorter).overrides == {
        "max_model_len": {"configured": 512, "measured": 1024}
    }
    assert mismatches(state, _cfg(server, max_model_len=1024)) == {}


def test_a_configured_pool_larger_than_measured_is_a_mismatch(server: FakeVllm) -> None:
    state = _state(server, SMOLLM2_ID, 2048)
    pool = _smollm2_pool()
    assert state.kv_cache_bytes == GIB > pool
    # The server's --kv-cache-memory-bytes is more than its usable pool (the null block).
    found = mismatches(state, _cfg(server, kv_cache_bytes=GIB))
    assert found == {"kv_cache_bytes": {"expected": GIB, "reported": pool}}
    said = f"KV pool too small: {pool:,} B usable, configured kv_cache_bytes {GIB:,}"
    assert reason(found) == said
    smaller = _cfg(server, kv_cache_bytes=GIB // 2)
    assert mismatches(state, smaller) == {}
    assert resolve(state, smaller).capacity_source == "configured"
    # A pool the server did not measure is what the configured figure stands in for.
    text = captured_metrics(SMOLLM2_ID)
    no_bytes = text.replace(f'kv_cache_memory_bytes="{GIB}"', 'kv_cache_memory_bytes="None"')
    assert no_bytes != text
    unmeasured = _state(server, SMOLLM2_ID, 2048, no_bytes)
    assert mismatches(unmeasured, _cfg(server, kv_cache_bytes=4 * GIB)) == {}


def test_the_pool_of_another_model_is_counted_in_its_own_blocks(server: FakeVllm) -> None:
    # Counted in Gemma 3's blocks (393,216 B at 128 tokens), SmolLM2's 364 would be a
    # pool of 143 MB, and half a GiB configured a mismatch; in its own, it holds that.
    state = _state(server, SMOLLM2_ID, 2048)
    half = mismatches(state, _cfg(server, model=GEMMA3_ID, kv_cache_bytes=GIB // 2))
    assert half == {"model": {"expected": GEMMA3_ID, "reported": SMOLLM2_ID}}
    found = mismatches(state, _cfg(server, model=GEMMA3_ID, kv_cache_bytes=GIB))
    assert found["kv_cache_bytes"] == {"expected": GIB, "reported": _smollm2_pool()}
    assert set(found) == {"model", "kv_cache_bytes"}
    assert reason(found).startswith("unexpected model: ")
    assert "; KV pool too small: " in reason(found)


@pytest.mark.parametrize(("cache_dtype", "reported"), [("fp8_e4m3", "fp8"), ("bfloat16", "bf16")])
def test_a_reported_kv_dtype_other_than_configured_is_a_mismatch(
    server: FakeVllm, cache_dtype: str, reported: str
) -> None:
    text = captured_metrics(GEMMA3_ID)
    edited = text.replace('cache_dtype="auto"', f'cache_dtype="{cache_dtype}"')
    assert edited != text
    state = _state(server, GEMMA3_ID, 2048, edited)
    other = "bf16" if reported == "fp8" else "fp8"
    found = mismatches(state, _cfg(server, kv_dtype=other))
    assert found == {"kv_dtype": {"expected": other, "reported": reported}}
    assert reason(found) == f"unexpected KV dtype: stores {reported}, configured kv_dtype {other}"
    assert mismatches(state, _cfg(server, kv_dtype=reported)) == {}
    # "auto" says nothing of its dtype: the configured one is what tells it.
    auto = _state(server, GEMMA3_ID, 2048)
    assert auto.cache_dtype == "auto"
    assert mismatches(auto, _cfg(server, kv_dtype="fp32")) == {}
