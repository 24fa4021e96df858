"""The inverse of ingestion.capacity.kv: what a KV pool of a given size holds.

Mirrors vLLM 0.32's ``get_kv_cache_configs`` (pool blocks),
``_estimate_max_model_len_from_groups`` / ``_auto_fit_max_model_len`` (the
largest length that fits, also named in the "estimated maximum model length"
error) and ``get_kv_cache_capacity`` (the logged "KV cache size: N tokens,
Maximum concurrency for L tokens per request: Xx").
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.capacity.kv import KvLayout

__all__ = [
    "PoolCapacity",
    "fits",
    "kv_cache_size_tokens",
    "max_concurrency",
    "max_model_len",
    "num_blocks",
    "pool_capacity",
]


def num_blocks(layout: KvLayout, available_bytes: int) -> int:
    """Blocks in the pool (``num_gpu_blocks``), the null block included."""
    return max(0, available_bytes) // layout.bytes_per_block


def fits(layout: KvLayout, tokens: int, available_bytes: int) -> bool:
    """vLLM's startup check: one request of ``tokens`` must fit in the pool minus
    the null block that BlockPool keeps back for ever."""
    usable = available_bytes - layout.bytes_per_block
    return usable > 0 and layout.bytes_per_request(tokens) <= usable


def max_model_len(layout: KvLayout, available_bytes: int, limit: int) -> int:
    """Largest length in [1, limit] that `fits`, 0 if none does.

    ``limit`` is the model's own maximum for ``--max-model-len auto``, or the
    requested length for the "estimated maximum model length" vLLM names when that
    request does not fit. vLLM binary-searches; the reservation is monotone in L,
    so the same search finds the same answer.
    """
    if limit <= 0 or not fits(layout, 1, available_bytes):
        return 0
    lo, hi, best = 1, limit, 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(layout, mid, available_bytes):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def max_concurrency(layout: KvLayout, available_bytes: int, tokens: int) -> float:
    """``get_max_concurrency_for_kv_cache_config``: pool blocks (null block not
    deducted here, unlike the startup check) over blocks per request."""
    return num_blocks(layout, available_bytes) / layout.blocks_per_request(tokens)


def kv_cache_size_tokens(layout: KvLayout, available_bytes: int, tokens: int) -> int:
    """The logged / ``/metrics`` capacity: int(concurrency x L), not blocks x block size,
    because sliding and chunked groups cost less than one slot per token."""
    return int(max_concurrency(layout, available_bytes, tokens) * tokens)


@dataclass(frozen=True)
class PoolCapacity:
    num_blocks: int
    bytes_per_block: int
    blocks_per_request: int
    max_concurrency: float
    kv_cache_size_tokens: int
    fits: bool


def pool_capacity(layout: KvLayout, available_bytes: int, max_model_len: int) -> PoolCapacity:
    """Everything a vLLM server reports about its pool at ``--max-model-len``."""
    return PoolCapacity(
        num_blocks=num_blocks(layout, available_bytes),
        bytes_per_block=layout.bytes_per_block,
        blocks_per_request=layout.blocks_per_request(max_model_len),
        max_concurrency=max_concurrency(layout, available_bytes, max_model_len),
        kv_cache_size_tokens=kv_cache_size_tokens(layout, available_bytes, max_model_len),
        fits=fits(layout, max_model_len, available_bytes),
    )
