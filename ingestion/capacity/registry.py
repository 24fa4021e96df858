"""The model registry: typed, validated access to ``ingestion/capacity/models.toml``.

The TOML file is the single place where architecture facts live, each with a
source; this module only parses and checks it, so a typo in the data fails
loudly at import of a model instead of silently skewing the KV arithmetic.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, cast

__all__ = [
    "KINDS",
    "REGISTRY_PATH",
    "AttentionGeometry",
    "AttentionKind",
    "LayerSpec",
    "ModelSpec",
    "RegistryError",
    "UnknownModelError",
    "expand_pattern",
    "get_model",
    "known_models",
    "load_registry",
]

AttentionKind = Literal["full", "sliding", "chunked"]
Role = Literal["gemma", "scout"]
KINDS: tuple[AttentionKind, ...] = ("full", "sliding", "chunked")
_LETTERS: dict[str, AttentionKind] = {"F": "full", "S": "sliding", "C": "chunked"}
_WINDOW_KEY: dict[AttentionKind, str | None] = {
    "full": None,
    "sliding": "window",
    "chunked": "chunk",
}

REGISTRY_PATH = Path(__file__).with_name("models.toml")


class RegistryError(ValueError):
    """models.toml is malformed or contradicts itself."""


class UnknownModelError(KeyError):
    """The id is not in the registry; the message lists the ids that are."""

    def __init__(self, hf_id: str, known: list[str]) -> None:
        self.hf_id = hf_id
        self.known = known
        super().__init__(hf_id)

    def __str__(self) -> str:
        return f"unknown model {self.hf_id!r}; known models: {', '.join(self.known)}"


@dataclass(frozen=True)
class AttentionGeometry:
    """KV shape of one attention kind (before any tensor-parallel split)."""

    kind: AttentionKind
    kv_heads: int
    head_dim: int
    window: int | None = None
    """Sliding window or attention chunk, in tokens; None for full attention."""


@dataclass(frozen=True)
class LayerSpec:
    index: int
    kind: AttentionKind
    kv_heads: int
    head_dim: int
    window: int | None
    kv_shared: bool
    """Reads another layer's KV: vLLM gives it no cache at all."""


@dataclass(frozen=True)
class ModelSpec:
    hf_id: str
    name: str
    num_layers: int
    pattern: str
    geometry: tuple[AttentionGeometry, ...]
    kv_shared_layers: int = 0
    attention_heads: int = 0
    """Query heads; 0 = unknown (then only the KV heads constrain tensor parallelism)."""
    max_position_embeddings: int = 0
    advertised_context: str = ""
    vocab_size: int = 0
    role: Role | None = None
    architecture: str = ""
    attention_k_eq_v: bool = False
    test_model: bool = False
    sources: tuple[tuple[str, str], ...] = ()
    unconfirmed: frozenset[str] = field(default_factory=frozenset)
    """Fields (e.g. ``"context"``, ``"pattern"``) no primary source confirmed."""

    def __post_init__(self) -> None:
        kinds = expand_pattern(self.pattern)
        if len(kinds) != self.num_layers:
            raise RegistryError(
                f"{self.hf_id}: pattern {self.pattern!r} has {len(kinds)} layers, "
                f"not {self.num_layers}"
            )
        have = {g.kind for g in self.geometry}
        if len(have) != len(self.geometry):
            raise RegistryError(f"{self.hf_id}: one geometry per attention kind")
        if missing := sorted(set(kinds) - have):
            raise RegistryError(f"{self.hf_id}: {', '.join(missing)} layers but no table for them")
        for g in self.geometry:
            if g.kv_heads <= 0 or g.head_dim <= 0:
                raise RegistryError(f"{self.hf_id}: {g.kind} heads and head_dim must be > 0")
            if (g.window is None) != (g.kind == "full") or (g.window is not None and g.window <= 0):
                raise RegistryError(f"{self.hf_id}: bad window/chunk for {g.kind} layers")
        if not 0 <= self.kv_shared_layers < self.num_layers:
            raise RegistryError(f"{self.hf_id}: kv_shared_layers out of range")

    def layer_kinds(self) -> tuple[AttentionKind, ...]:
        return expand_pattern(self.pattern)

    def count(self, kind: AttentionKind) -> int:
        return self.layer_kinds().count(kind)

    def attention(self, kind: AttentionKind) -> AttentionGeometry:
        for g in self.geometry:
            if g.kind == kind:
                return g
        raise KeyError(f"{self.hf_id} has no {kind} layers")

    def layers(self) -> tuple[LayerSpec, ...]:
        first_shared = self.num_layers - self.kv_shared_layers
        out = []
        for i, kind in enumerate(self.layer_kinds()):
            g = self.attention(kind)
            out.append(LayerSpec(i, kind, g.kv_heads, g.head_dim, g.window, i >= first_shared))
        return tuple(out)

    def source(self, name: str) -> str:
        return dict(self.sources).get(name, "")


def expand_pattern(pattern: str) -> tuple[AttentionKind, ...]:
    """``"SSSSF*7"`` -> 35 kinds; segments join with ``+`` (``"F*2+SSF"``)."""
    kinds: list[AttentionKind] = []
    for segment in pattern.replace(" ", "").split("+"):
        unit, _, times = segment.partition("*")
        if not unit or any(c not in _LETTERS for c in unit):
            raise RegistryError(f"bad layer pattern {pattern!r}: use S, F, C, '*N' and '+'")
        if times and (not times.isdigit() or int(times) <= 0):
            raise RegistryError(f"bad repeat count in layer pattern {pattern!r}")
        kinds.extend(_LETTERS[c] for c in unit * (int(times) if times else 1))
    return tuple(kinds)


def _number(entry: Mapping[str, Any], key: str, where: str, sources: dict[str, str]) -> Any:
    item = entry.get(key)
    if not isinstance(item, dict) or "value" not in item:
        raise RegistryError(f"{where}: {key} must be {{ value = ..., source = ... }}")
    if not isinstance(item.get("source"), str) or not item["source"]:
        raise RegistryError(f"{where}: {key} has no source")
    sources[key] = item["source"]
    return item["value"]


def _int(entry: Mapping[str, Any], key: str, where: str, sources: dict[str, str]) -> int:
    value = _number(entry, key, where, sources)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegistryError(f"{where}: {key} must be an integer")
    return value


def _parse_model(hf_id: str, raw: Mapping[str, Any]) -> ModelSpec:
    sources: dict[str, str] = {}
    unconfirmed = {
        key for key, item in raw.items() if isinstance(item, dict) and item.get("unconfirmed")
    }
    pattern = _number(raw, "pattern", hf_id, sources)
    if not isinstance(pattern, str):
        raise RegistryError(f"{hf_id}: pattern must be a string")
    geometry = []
    for kind in KINDS:
        table = raw.get(kind)
        if table is None:
            continue
        where = f"{hf_id}.{kind}"
        sub: dict[str, str] = {}
        window_key = _WINDOW_KEY[kind]
        window = _int(table, window_key, where, sub) if window_key else None
        heads, dim = _int(table, "kv_heads", where, sub), _int(table, "head_dim", where, sub)
        geometry.append(AttentionGeometry(kind, heads, dim, window))
        sources.update({f"{kind}.{k}": v for k, v in sub.items()})
        unconfirmed |= {
            f"{kind}.{k}" for k, v in table.items() if isinstance(v, dict) and v.get("unconfirmed")
        }
    role = raw.get("role")
    if role not in ("gemma", "scout", None):
        raise RegistryError(f"{hf_id}: role must be gemma or scout")
    context = raw.get("context", {})
    stated = {kind: _int(raw, f"{kind}_layers", hf_id, sources) for kind in KINDS}
    spec = ModelSpec(
        hf_id=hf_id,
        name=str(raw.get("name", hf_id)),
        num_layers=_int(raw, "layers", hf_id, sources),
        pattern=pattern,
        geometry=tuple(geometry),
        kv_shared_layers=_int(raw, "kv_shared_layers", hf_id, sources),
        attention_heads=_int(raw, "attention_heads", hf_id, sources),
        max_position_embeddings=_int(raw, "context", hf_id, sources),
        advertised_context=str(context.get("advertised", "")),
        vocab_size=_int(raw, "vocab", hf_id, sources),
        role=cast(Role | None, role),
        architecture=str(raw.get("architecture", "")),
        attention_k_eq_v=bool(_number(raw, "attention_k_eq_v", hf_id, sources)),
        test_model=bool(raw.get("test_model", False)),
        sources=tuple(sorted(sources.items())),
        unconfirmed=frozenset(unconfirmed),
    )
    # The explicit counts exist so a reader can check the pattern at a glance;
    # make sure the two never drift apart.
    for kind, count in stated.items():
        if count != spec.count(kind):
            raise RegistryError(
                f"{hf_id}: {kind}_layers = {count} but the pattern has {spec.count(kind)}"
            )
    return spec


def load_registry(path: Path = REGISTRY_PATH) -> dict[str, ModelSpec]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    if data.get("schema") != 1:
        raise RegistryError(f"{path}: unsupported schema {data.get('schema')!r}")
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise RegistryError(f"{path}: no [models] table")
    return {hf_id: _parse_model(hf_id, raw) for hf_id, raw in models.items()}


@cache
def _registry() -> dict[str, ModelSpec]:
    return load_registry()


def known_models() -> list[str]:
    return list(_registry())


def get_model(hf_id: str) -> ModelSpec:
    try:
        return _registry()[hf_id]
    except KeyError:
        raise UnknownModelError(hf_id, known_models()) from None
