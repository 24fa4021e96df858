"""A reachable server's KV pool as it reports it, before any configured override:
the dtype it stores the pool in, the bytes of one block, and the usable bytes.

The usable pool is `(num_gpu_blocks - 1) x bytes_per_block`: vLLM holds one block
back (the null block), and its blocks need not fill `kv_cache_memory_bytes`. When the
served model is in the registry (its served name, or the configured `model`), the
bytes per block come from `ingestion.capacity.kv`, and a server that reports blocks but no
bytes (vLLM on a GPU without `--kv-cache-memory-bytes`) gets a "derived" capacity.
Discovery (`service/backends/discovery.py`) applies the configuration to these
figures; `service/backends/mismatch.py` compares it with them.
"""

from __future__ import annotations

from typing import Literal

from ingestion.capacity.kv import KvConfig, KvDtype, KvLayout, kv_layout
from ingestion.capacity.pool import num_blocks
from ingestion.capacity.registry import UnknownModelError, get_model
from service.backends.probe import BackendState
from service.deployment import BackendConfig

CapacitySource = Literal["measured", "derived", "configured", "unknown"]
# What `--kv-cache-dtype auto` can store for the registry's models: their bf16, or
# fp32 where a CPU server runs --dtype float32 (service/backends/serving_dtype.py).
_AUTO_DTYPES: tuple[KvDtype, ...] = ("bf16", "fp32")


def reported_kv_dtype(state: BackendState) -> KvDtype | None:
    """The dtype a set --kv-cache-dtype names (bfloat16, fp8*); None for "auto", for
    none reported, and for one Longdoc does not account for."""
    cache_dtype = state.cache_dtype
    if cache_dtype == "bfloat16":
        return "bf16"
    if cache_dtype is not None and cache_dtype.startswith("fp8"):
        return "fp8"
    return None


def _layout(state: BackendState, cfg: BackendConfig, dtype: KvDtype) -> KvLayout | None:
    model_id = cfg.model or state.model
    if model_id is None or state.block_size is None:
        return None
    try:
        spec = get_model(model_id)
        return kv_layout(spec, KvConfig(block_size=state.block_size, tp=cfg.tp, kv_dtype=dtype))
    except (UnknownModelError, ValueError):
        return None


def kv_dtype(state: BackendState, cfg: BackendConfig) -> KvDtype | None:
    """The dtype the server stores its KV cache in; None when it is one Longdoc does not
    account for (float16, int4, ...) or cannot tell (an "auto" pool of a model not in
    the registry).

    A set --kv-cache-dtype is reported. "auto" stores the model's dtype, which vLLM
    does not report: bf16 for the registry's models on a GPU, fp32 for a CPU server
    started with --dtype float32. Then the configured `kv_dtype` holds; else the one
    whose registry block size cuts the reported pool into exactly the reported blocks
    (vLLM's num_blocks = pool bytes // bytes per block; fp32 blocks are twice bf16's,
    so at most one matches); else bf16."""
    reported = reported_kv_dtype(state)
    if reported is not None:
        return reported
    if state.cache_dtype not in (None, "auto"):
        return None
    if cfg.kv_dtype is not None:
        return cfg.kv_dtype
    layouts = {dtype: _layout(state, cfg, dtype) for dtype in _AUTO_DTYPES}
    blocks, pool = state.num_blocks, state.kv_cache_bytes
    if None in layouts.values():
        return None
    if blocks is not None and pool is not None:
        for dtype, layout in layouts.items():
            if layout is not None and num_blocks(layout, pool) == blocks:
                return dtype
    return "bf16"


def bytes_per_block(state: BackendState, cfg: BackendConfig) -> int | None:
    """One block of the server's pool, from the registry; None when the served model
    (or the configured `model`) is not in it, or its dtype or layout is not known."""
    dtype = kv_dtype(state, cfg)
    layout = None if dtype is None else _layout(state, cfg, dtype)
    return None if layout is None else layout.bytes_per_block


def usable_capacity(state: BackendState, cfg: BackendConfig) -> tuple[int | None, CapacitySource]:
    """The server's usable KV pool in bytes, before overrides, and how it was found."""
    blocks, reported = state.num_blocks, state.kv_cache_bytes
    per_block = bytes_per_block(state, cfg)
    if reported is None:
        if blocks is None or per_block is None:
            return None, "unknown"
        return (blocks - 1) * per_block, "derived"
    if blocks is None:  # no block count: nothing to take the null block from
        return reported, "measured"
    if per_block is not None and blocks * per_block <= reported:
        return (blocks - 1) * per_block, "measured"
    # Model not in the registry (or its layout does not fit the reported bytes): the
    # reported bytes, less one block's share of them for the null block vLLM holds back.
    return reported - reported // blocks, "measured"
