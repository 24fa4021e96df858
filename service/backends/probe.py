"""Asking one vLLM server what it is: `GET /v1/models` for the model and its context,
`GET /metrics` for the KV pool (`vllm:cache_config_info`) and load. A server's faults
never raise here; they come back in the state, so the caller can mark it down or its
capacity unknown (never infinite)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from service.backends import metrics as vllm_metrics

PROBE_TIMEOUT_S = 5.0  # for callers without settings; Settings.backend_probe_timeout_s
# Far above any real KV pool (a node of 8 x 141 GB is ~1.1e12); a bigger number is
# a broken exporter, and taking it would admit without limit.
_MAX_SANE = 1 << 50


@dataclass(frozen=True)
class BackendState:
    """One server as it answered. `error` set: down. `metrics_error` set: up, but
    the KV figures it could not give are None."""

    url: str
    model: str | None = None
    max_model_len: int | None = None
    block_size: int | None = None
    num_blocks: int | None = None
    kv_cache_bytes: int | None = None
    """`kv_cache_memory_bytes` as reported; the usable pool is smaller (`resolve`)."""
    kv_cache_tokens: int | None = None
    cache_dtype: str | None = None
    """--kv-cache-dtype as reported. vLLM 0.32 writes "auto" for the model's dtype and
    says no more: a --dtype float32 server reports "auto" as a bfloat16 one does
    (capacity.kv_dtype tells them apart by the pool's blocks)."""
    kv_usage: float | None = None
    requests_running: int | None = None
    requests_waiting: int | None = None
    error: str | None = None
    metrics_error: str | None = None


def normalize_url(url: object) -> str:
    # HttpUrl adds a trailing slash; rows are keyed by URL, so one spelling only.
    return str(url).rstrip("/")


def _positive(labels: Mapping[str, str], key: str) -> int | None:
    try:
        value = int(labels.get(key, ""))
    except ValueError:  # vLLM writes "None" for what it does not know
        return None
    return value if 0 < value <= _MAX_SANE else None


def _model_entry(body: Any) -> tuple[str, int]:
    entries = body["data"]
    # LoRA adapters are listed too, each with a `parent`; the base model has none.
    base = next((e for e in entries if not e.get("parent")), entries[0])
    model, length = base["id"], base["max_model_len"]
    if not isinstance(model, str) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"unusable model entry {base!r}")
    return model, length


def _from_metrics(url: str, model: str, length: int, text: str) -> BackendState:
    metrics = vllm_metrics.Metrics(text)
    try:
        labels = metrics.cache_config()
    except ValueError as exc:
        return BackendState(url, model, length, metrics_error=f"/metrics: {exc}")
    kv_bytes = _positive(labels, "kv_cache_memory_bytes")
    usage = metrics.values("vllm:kv_cache_usage_perc")
    running = metrics.values("vllm:num_requests_running")
    waiting = metrics.values("vllm:num_requests_waiting")
    return BackendState(
        url,
        model,
        length,
        block_size=_positive(labels, "block_size"),
        num_blocks=_positive(labels, "num_gpu_blocks"),
        kv_cache_bytes=kv_bytes,
        kv_cache_tokens=_positive(labels, "kv_cache_size_tokens"),
        cache_dtype=labels.get("cache_dtype"),
        # Several engines (data parallel) each report; the fullest one bounds us.
        kv_usage=max(usage) if usage else None,
        requests_running=int(sum(running)) if running else None,
        requests_waiting=int(sum(waiting)) if waiting else None,
        metrics_error=None
        if kv_bytes
        else "/metrics: vllm:cache_config_info has no usable kv_cache_memory_bytes "
        f"({labels.get('kv_cache_memory_bytes')!r})",
    )


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> BackendState:
    """Ask one server for its model, context and KV pool. Never raises for the
    server's faults: they come back in `error` / `metrics_error`."""
    base = normalize_url(url)
    with httpx.Client(base_url=base, timeout=timeout) as client:
        try:
            model, length = _model_entry(client.get("/v1/models").raise_for_status().json())
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            return BackendState(base, error=f"GET /v1/models: {type(e).__name__}: {e}")
        try:
            text = client.get("/metrics").raise_for_status().text
        except httpx.HTTPError as exc:
            return BackendState(base, model, length, metrics_error=f"GET /metrics: {exc}")
    return _from_metrics(base, model, length, text)
