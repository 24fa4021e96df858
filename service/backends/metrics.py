"""Reading what a vLLM server says about itself: its `/metrics` text (Prometheus
exposition format, parsed by prometheus_client, the library vLLM writes it with),
where `vllm:cache_config_info{block_size=..., num_gpu_blocks=...,
kv_cache_size_tokens=...}` describes the KV pool, and the one line its engine core
(vllm/v1/core/kv_cache_utils.py) logs at start with the capacity in tokens:

    CPU KV cache size: 93,184 tokens, Maximum concurrency for 8,192 tokens per request: 11.38x

One reader for the backend probe, the test harness and the benchmarks, so they cannot
disagree on what a sample means."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


class Metrics:
    """One /metrics text, parsed once, on first use: the probe reads several metrics
    from each scrape."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def samples(self) -> list[Sample]:
        """Every sample. Raises ValueError when the text is not the Prometheus text
        format (an HTML error page, a truncated body)."""
        families = text_string_to_metric_families(self.text)
        try:
            return [s for family in families for s in family.samples]
        except (ValueError, IndexError, TypeError) as exc:  # IndexError: a cut line
            raise ValueError(f"not Prometheus text: {exc}") from exc

    def values(self, name: str, **labels: str) -> list[float]:
        """The values of the samples called `name` whose labels include `labels`; one
        per engine when a server runs several (data parallel)."""
        return [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of `values(name, **labels)`: 0 when no sample matches."""
        return sum(self.values(name, **labels))

    def cache_config(self) -> dict[str, str]:
        """The labels of `vllm:cache_config_info`, e.g. {"block_size": "128",
        "num_gpu_blocks": "728", "kv_cache_size_tokens": "93184", ...}. Values stay
        strings, as vLLM writes them. Raises ValueError, naming the metric, when it is
        absent or the text cannot be read."""
        try:
            found = self.samples
        except ValueError as exc:
            raise ValueError(f"cannot read vllm:cache_config_info: {exc}") from exc
        for s in found:
            if s.name == "vllm:cache_config_info":
                return dict(s.labels)
        raise ValueError("no vllm:cache_config_info sample in the metrics text")


def parse_cache_config(text: str) -> dict[str, str]:
    """`Metrics(text).cache_config()`."""
    return Metrics(text).cache_config()


@dataclass(frozen=True)
class KvCapacity:
    tokens: int
    max_model_len: int
    max_concurrency: float


_KV_LINE = re.compile(
    r"KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: "
    r"([\d.]+)x"
)


def parse_kv_capacity_log(log_text: str) -> KvCapacity | None:
    """The engine core's "CPU KV cache size: N tokens, Maximum concurrency for L tokens
    per request: Cx" line (the last one, if the log holds several starts)."""
    found = _KV_LINE.findall(log_text)
    if not found:
        return None
    tokens, length, conc = found[-1]
    return KvCapacity(int(tokens.replace(",", "")), int(length.replace(",", "")), float(conc))
