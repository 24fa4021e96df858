"""The start-up check of the compose stack's vLLM servers (`service.stack`): each
gets as many GPUs as its tensor-parallel size, servers sharing a GPU take at most all
of it, and the weights and one request of --max-model-len fit the memory each GPU
gives, or the error names the .env variables to change and the longest that fits."""

from __future__ import annotations

from collections.abc import Sequence

from ingestion.capacity.kv import kv_layout
from ingestion.capacity.pool import fits
from ingestion.capacity.pool import max_model_len as largest_fitting_len
from ingestion.capacity.registry import get_model
from service.stack import KV_CACHE_DTYPES, WEIGHT_BYTES, StackError, StackServer, pool_bytes


def check(servers: Sequence[StackServer]) -> None:
    """Raise StackError, naming the server and the reason, if the stack cannot run."""
    for server in servers:
        if server.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise StackError(
                f"{server.where('KV_CACHE_DTYPE')}: --kv-cache-dtype must be one of "
                f"{', '.join(KV_CACHE_DTYPES)}, not {server.kv_cache_dtype!r}"
            )
        if server.device == "cpu":
            continue
        ids = server.device_ids
        if len(ids) != server.tp:
            raise StackError(
                f"{server.where('GPUS', 'TP')}: --tensor-parallel-size {server.tp} runs on "
                f"{server.tp} GPU(s), but device_ids gives it {len(ids)} "
                f"({server.gpus or 'none'}); give it as many GPUs as its tensor-parallel size"
            )
        _check_memory(server)
    _check_shares(servers)


def _check_shares(servers: Sequence[StackServer]) -> None:
    """Servers may share a GPU (a one-GPU host), each taking its
    --gpu-memory-utilization of it: together at most all of it."""
    sharing: dict[str, list[StackServer]] = {}
    for server in servers:
        if server.device == "gpu":
            for gpu in server.device_ids:
                sharing.setdefault(gpu, []).append(server)
    for gpu, users in sharing.items():
        total = sum(u.gpu_memory_utilization for u in users)
        if len(users) > 1 and total > 1:
            shares = ", ".join(f"{u.service} {u.gpu_memory_utilization:g}" for u in users)
            raise StackError(
                f"GPU {gpu} is given to {shares}: each server takes its "
                f"--gpu-memory-utilization of the GPU, and these add up to {total:g} of 1 "
                f"(.env: {', '.join(f'{u.variables}_GPU_MEMORY_UTILIZATION' for u in users)})"
            )


_KV_VARIABLES = (
    "MAX_MODEL_LEN",
    "QUANTIZATION",
    "KV_CACHE_DTYPE",
    "MAX_NUM_BATCHED_TOKENS",
    "GPUS",
)


def _check_memory(server: StackServer) -> None:
    weights = WEIGHT_BYTES.get((server.weights, server.quantization))
    pool = pool_bytes(server)
    if weights is None or pool is None:
        return
    gib = 2**30
    per_gpu = weights // server.tp
    budget = pool + per_gpu
    memory, share = server.gpu_memory_gib, server.gpu_memory_utilization
    setting = f"{server.tp} GPU(s) of {memory:g} GiB at {share:g}"
    dtype = server.quantization or "bf16"
    weights_text = f"{server.weights} ({dtype} weights, {weights / gib:.1f} GiB)"
    if per_gpu >= budget:
        raise StackError(
            f"{server.where('GPUS', 'TP', 'QUANTIZATION')}: {weights_text} does not fit on "
            f"{setting}: {per_gpu / gib:.1f} GiB per GPU of {budget / gib:.1f} GiB; give it "
            "more GPUs or quantize it"
        )
    layout = kv_layout(get_model(server.model), server.kv_config)
    need = layout.bytes_per_request(server.max_model_len)
    if not fits(layout, server.max_model_len, pool):
        longest = largest_fitting_len(layout, pool, server.max_model_len)
        raise StackError(
            f"{server.where(*_KV_VARIABLES)}: {weights_text} "
            f"on {setting} leaves {pool / gib:.1f} GiB of KV cache per GPU, and one request of "
            f"--max-model-len {server.max_model_len:,} tokens needs {need / gib:.1f} GiB "
            f"({server.kv_config.kv_dtype} KV); the longest that fits is about {longest:,} "
            "tokens: lower the length, or give it more GPUs, FP8 weights or FP8 KV"
        )
