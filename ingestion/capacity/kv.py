"""KV-cache arithmetic that reproduces vLLM 0.32's own accounting, exactly.

Longdoc admits a job only when the server has room for its KV cache, so these
numbers must equal what vLLM computes at startup (pool blocks, the per-request
reservation it checks ``max_model_len`` against, ``--max-model-len auto``, the
logged capacity and concurrency). Each step names the vLLM function it mirrors
(vllm/v1/kv_cache_interface.py, vllm/v1/core/kv_cache_utils.py,
vllm/model_executor/layers/attention/attention.py).

Pure integer arithmetic: no I/O, no vLLM import.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ingestion.capacity.kv_config import DTYPE_BYTES, KvConfig, KvDtype
from ingestion.capacity.registry import AttentionKind, ModelSpec

__all__ = [
    "DTYPE_BYTES",
    "GroupReservation",
    "KvConfig",
    "KvDtype",
    "KvGroup",
    "KvLayout",
    "KvReservation",
    "LayerKv",
    "kv_layout",
    "layer_kv_specs",
    "reserve",
]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LayerKv:
    """One layer's KV cache spec as vLLM builds it (``*AttentionSpec``)."""

    kind: AttentionKind
    window: int | None
    block_size: int
    token_bytes: int
    padded_page: int | None = None

    @property
    def page_bytes(self) -> int:
        return self.padded_page or self.block_size * self.token_bytes

    def blocks(self, tokens: int, in_flight: int) -> int:
        """``max_admission_blocks_per_request`` / ``cdiv(max_model_len, block)``."""
        if self.kind == "sliding":
            assert self.window is not None
            # +1: the window need not start on a block boundary.
            return cdiv(min(self.window - 1 + in_flight, tokens), self.block_size) + 1
        if self.kind == "chunked":
            assert self.window is not None
            return cdiv(min(self.window + in_flight, tokens), self.block_size)
        return cdiv(tokens, self.block_size)


@dataclass(frozen=True)
class KvGroup:
    """One KV cache group: layers that share a block table."""

    kind: AttentionKind
    window: int | None
    layers: int
    block_size: int
    page_bytes: int
    """The group spec's ``page_size_bytes``: the per-layer page, or, for a group of
    layers with different pages (hybrid manager off, mixed head shapes), their sum."""
    bytes_per_block: int
    """Bytes one block of this group spans across its layers."""

    def blocks(self, tokens: int, in_flight: int) -> int:
        return LayerKv(self.kind, self.window, self.block_size, 0).blocks(tokens, in_flight)


@dataclass(frozen=True)
class GroupReservation:
    kind: AttentionKind
    layers: int
    block_size: int
    page_bytes: int
    blocks: int


@dataclass(frozen=True)
class KvReservation:
    tokens: int
    bytes_per_request: int
    blocks_per_request: int
    bytes_per_block: int
    groups: tuple[GroupReservation, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "bytes_per_request": self.bytes_per_request,
            "blocks_per_request": self.blocks_per_request,
            "bytes_per_block": self.bytes_per_block,
            "groups": [
                {
                    "kind": g.kind,
                    "layers": g.layers,
                    "block_size": g.block_size,
                    "page_bytes": g.page_bytes,
                    "blocks": g.blocks,
                }
                for g in self.groups
            ],
        }


@dataclass(frozen=True)
class KvLayout:
    """A model's KV groups under one config; every per-L quantity derives from it."""

    groups: tuple[KvGroup, ...]
    config: KvConfig

    @property
    def bytes_per_block(self) -> int:
        """``_get_kv_cache_bytes_per_block``, layer-outer layout: the largest group."""
        return max(g.bytes_per_block for g in self.groups)

    def blocks_per_request(self, tokens: int) -> int:
        _check_tokens(tokens)
        return sum(g.blocks(tokens, self.config.in_flight_tokens) for g in self.groups)

    def bytes_per_request(self, tokens: int) -> int:
        """``_max_memory_usage_bytes_from_groups``: every group draws whole blocks
        of the pool's block size from one shared pool."""
        return self.blocks_per_request(tokens) * self.bytes_per_block

    def reserve(self, tokens: int) -> KvReservation:
        in_flight = self.config.in_flight_tokens
        per_group = tuple(
            GroupReservation(
                g.kind, g.layers, g.block_size, g.page_bytes, g.blocks(tokens, in_flight)
            )
            for g in self.groups
        )
        return KvReservation(
            tokens=tokens,
            bytes_per_request=self.bytes_per_request(tokens),
            blocks_per_request=self.blocks_per_request(tokens),
            bytes_per_block=self.bytes_per_block,
            groups=per_group,
        )


def _check_tokens(tokens: int) -> None:
    if tokens <= 0:
        raise ValueError(f"token count must be positive, not {tokens}")


def _kv_heads_per_rank(kv_heads: int, attention_heads: int, tp: int, hf_id: str) -> int:
    # The same divisibility vLLM's attention layers assert; past kv_heads ranks the
    # KV heads are replicated, so a rank never holds less than one.
    split_queries = not attention_heads or attention_heads % tp == 0
    if not split_queries or (kv_heads % tp if kv_heads >= tp else tp % kv_heads):
        raise ValueError(
            f"tensor-parallel size {tp} does not split {hf_id} "
            f"({attention_heads} attention heads, {kv_heads} KV heads)"
        )
    return max(1, kv_heads // tp)


def _sliding_block(cfg: KvConfig) -> int:
    """Sliding layers pick their own block (``_largest_kernel_block_within``): the
    largest multiple of the kernel's ``MultipleOf`` that fits ``--block-size``, and
    at least one kernel multiple (so 32 on the CPU with ``--block-size 16``)."""
    m = cfg.kernel_block_multiple
    return max(m, cfg.block_size // m * m)


def layer_kv_specs(model: ModelSpec, cfg: KvConfig) -> list[LayerKv]:
    """Specs of the KV-owning layers in layer order; KV-shared layers get none."""
    specs = []
    for layer in model.layers():
        if layer.kv_shared:
            continue
        heads = _kv_heads_per_rank(layer.kv_heads, model.attention_heads, cfg.tp, model.hf_id)
        token_bytes = heads * 2 * layer.head_dim * DTYPE_BYTES[cfg.kv_dtype]  # K and V
        block = _sliding_block(cfg) if layer.kind == "sliding" else cfg.block_size
        specs.append(LayerKv(layer.kind, layer.window, block, token_bytes))
    return specs


def _promote_local(specs: list[LayerKv]) -> list[LayerKv]:
    """``_promote_local_kv_cache_specs``: with full layers present, sliding and
    chunked layers are allocated as full ones, at the full layers' block size."""
    kinds = {s.kind for s in specs}
    if "full" not in kinds or kinds == {"full"}:
        return specs
    full_blocks = {s.block_size for s in specs if s.kind == "full"}
    block = full_blocks.pop() if len(full_blocks) == 1 else None
    return [
        s if s.kind == "full" else LayerKv("full", None, block or s.block_size, s.token_bytes)
        for s in specs
    ]


def _unify_pages(specs: list[LayerKv]) -> list[LayerKv]:
    """``unify_kv_cache_spec_page_size``: grow smaller pages to the largest by
    scaling their block size, or pad them when the ratio is not whole."""
    largest = max(s.page_bytes for s in specs)
    out = []
    for s in specs:
        if s.page_bytes == largest:
            out.append(s)
        elif largest % s.page_bytes == 0:
            out.append(replace(s, block_size=s.block_size * (largest // s.page_bytes)))
        else:
            out.append(replace(s, padded_page=largest))
    return out


def _group(specs: list[LayerKv]) -> list[KvGroup]:
    """``get_kv_cache_groups`` for attention-only models."""
    first = specs[0]
    if all(s == first for s in specs):
        n, page = len(specs), first.page_bytes
        return [KvGroup(first.kind, first.window, n, first.block_size, page, n * page)]
    if all(
        (s.kind, s.window, s.block_size) == (first.kind, first.window, first.block_size)
        for s in specs
    ):
        # UniformTypeKVCacheSpecs: one group whose page is the sum of its layers'.
        total = sum(s.page_bytes for s in specs)
        return [KvGroup(first.kind, first.window, len(specs), first.block_size, total, total)]
    buckets: dict[LayerKv, list[LayerKv]] = {}
    for s in _unify_pages(specs):
        buckets.setdefault(s, []).append(s)
    sizes = [len(b) for b in buckets.values()]
    # The smallest kind sets the group size (the "1" of an n:1 pattern), unless
    # all kinds are close in size, where padding to the largest wastes less.
    group_size = max(sizes) if max(sizes) < min(sizes) * 1.5 else min(sizes)
    groups = []
    for spec, members in buckets.items():
        n = cdiv(len(members), group_size)
        for i in range(n):
            count = len(members[i::n])
            groups.append(
                KvGroup(
                    spec.kind,
                    spec.window,
                    count,
                    spec.block_size,
                    spec.page_bytes,
                    count * spec.page_bytes,
                )
            )
    return groups


def kv_layout(model: ModelSpec, cfg: KvConfig | None = None) -> KvLayout:
    cfg = cfg or KvConfig()
    specs = layer_kv_specs(model, cfg)
    if not cfg.hybrid:
        specs = _promote_local(specs)
    groups = tuple(_group(specs))
    for g in groups:
        # vLLM refuses to start when a group's block cannot be split into kernel blocks
        # (``select_common_block_size``: "No common block size").
        if g.block_size % cfg.kernel_block_multiple:
            raise ValueError(
                f"no common block size for {g.block_size}-token {g.kind} blocks: the "
                f"attention kernel needs multiples of {cfg.kernel_block_multiple}"
            )
    return KvLayout(groups, cfg)


def reserve(model: ModelSpec, tokens: int, cfg: KvConfig | None = None) -> KvReservation:
    """What vLLM reserves for one request of ``tokens`` tokens."""
    _check_tokens(tokens)
    return kv_layout(model, cfg).reserve(tokens)
