"""Backends as the router sees them: replicas grouped into classes that share a role,
model and KV settings, so one request costs the same on each; what the longest
request a class holds is, and why a replica cannot take a given one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from ingestion.capacity.kv import KvConfig, KvLayout, kv_layout
from ingestion.capacity.pool import fits, max_model_len
from ingestion.capacity.registry import UnknownModelError, get_model
from ingestion.capacity.route_plan import Rejection, Request

ROLE_ORDER = ("gemma", "scout")
GIB = 1 << 30


@dataclass(frozen=True)
class Backend:
    """One replica as measured (or configured). None = unknown = unusable."""

    id: str
    role: str
    model: str
    max_model_len: int | None
    kv_cache_bytes: int | None = None
    kv_cache_blocks: int | None = None
    """vLLM's num_gpu_blocks (null block included), if given instead of bytes."""
    kv: KvConfig = field(default_factory=KvConfig)
    healthy: bool = True


@dataclass(frozen=True)
class BackendClass:
    """Replicas that share role, model and KV settings, so one request costs the same."""

    role: str
    model: str
    layout: KvLayout | None
    replicas: tuple[Backend, ...]
    broken: str = ""  # why no replica here can be used at all (registry, TP split)

    def capacity(self, b: Backend) -> int | None:
        if self.layout is None:
            return None
        if b.kv_cache_bytes is not None:
            return b.kv_cache_bytes
        if b.kv_cache_blocks is not None:
            return b.kv_cache_blocks * self.layout.bytes_per_block
        return None

    @cached_property
    def best(self) -> int:
        """The longest request any replica of this class holds."""
        return max((self.longest(b) for b in self.replicas), default=0)

    def longest(self, b: Backend) -> int:
        """The largest L this replica holds; 0 if it holds nothing."""
        pool = self.capacity(b)
        if not b.healthy or b.max_model_len is None or pool is None or self.layout is None:
            return 0
        return max_model_len(self.layout, pool, b.max_model_len)

    def why_not(self, b: Backend, tokens: int) -> str:
        pool = self.capacity(b)
        if self.broken:
            return self.broken
        if not b.healthy:
            return "down"
        if b.max_model_len is None:
            return "max_model_len unknown"
        if pool is None or self.layout is None:
            return "KV capacity unknown (no measured or configured pool)"
        if tokens > b.max_model_len:
            return f"{tokens:,} tokens > max_model_len {b.max_model_len:,}"
        if not fits(self.layout, tokens, pool):
            need = self.layout.bytes_per_request(tokens)
            return (
                f"{tokens:,} tokens need {need / GIB:.2f} GiB of KV; its pool of "
                f"{pool / GIB:.2f} GiB holds at most {self.longest(b):,} tokens"
            )
        return ""

    def request(self, input_tokens: int, output_tokens: int) -> Request | None:
        tokens = input_tokens + output_tokens
        able = tuple(b.id for b in self.replicas if not self.why_not(b, tokens))
        if not able or self.layout is None:
            return None
        r = self.layout.reserve(tokens)
        return Request(
            self.role,
            self.model,
            input_tokens,
            output_tokens,
            r.bytes_per_request,
            r.blocks_per_request,
            able,
        )

    def rejection(self, tokens: int) -> Rejection:
        by_reason: dict[str, list[str]] = {}
        for b in self.replicas:
            by_reason.setdefault(self.why_not(b, tokens), []).append(b.id)
        text = "; ".join(
            f"{reason} ({', '.join(ids)})" if len(by_reason) > 1 else reason
            for reason, ids in by_reason.items()
        )
        ids = tuple(b.id for b in self.replicas)
        return Rejection(self.role, self.model, ids, f"{self.role}: {text}")


def backend_classes(backends: Sequence[Backend]) -> list[BackendClass]:
    groups: dict[tuple[str, str, KvConfig], list[Backend]] = {}
    for b in backends:
        if b.role not in ROLE_ORDER:
            raise ValueError(f"backend {b.id}: role must be one of {ROLE_ORDER}, not {b.role!r}")
        groups.setdefault((b.role, b.model, b.kv), []).append(b)
    out = []
    for (role, model, cfg), members in groups.items():
        try:
            layout: KvLayout | None = kv_layout(get_model(model), cfg)
            broken = ""
        except (UnknownModelError, ValueError) as exc:
            layout, broken = None, str(exc)
        out.append(BackendClass(role, model, layout, tuple(members), broken))
    # sorted() is stable: within a role the configured order stands.
    return sorted(out, key=lambda c: ROLE_ORDER.index(c.role))
