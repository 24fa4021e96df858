"""The `--dtype` of the vLLM CPU servers Longdoc starts (service.backends.server), and
the KV cache dtype that follows from it."""

from __future__ import annotations

import os
from pathlib import Path

# The weights' dtype a CPU server gets, LONGDOC_VLLM_DTYPE (Settings.vllm_dtype) to
# choose it; "auto" reads the CPU's flags. With `--kv-cache-dtype auto` the KV cache is
# stored in the same dtype, which vLLM's /metrics does not say (cache_dtype="auto").
DTYPE_ENV = "LONGDOC_VLLM_DTYPE"
SERVING_DTYPES = ("bfloat16", "float32")
KV_DTYPE = {"bfloat16": "bf16", "float32": "fp32"}
# x86 flags of native bf16 arithmetic (AVX512-BF16 dot products, AMX tiles), which
# vLLM's CPU kernels use; without them its bf16 GEMMs are emulated.
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_bf16(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's text lists a native bf16 flag (the first CPU's)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return not _BF16_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False


def cpu_serving_dtype(choice: str | None = None, cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The `--dtype` a vLLM CPU server here should get: `choice`, else LONGDOC_VLLM_DTYPE,
    else "auto": bfloat16 with bf16 hardware, float32 without (fp32 doubles the KV
    bytes per token but avoids the emulation)."""
    choice = choice or os.environ.get(DTYPE_ENV) or "auto"
    if choice != "auto":
        if choice not in SERVING_DTYPES:
            raise ValueError(
                f"{DTYPE_ENV} must be auto or one of {', '.join(SERVING_DTYPES)}, not {choice!r}"
            )
        return choice
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    return "bfloat16" if cpu_has_bf16(text) else "float32"
