"""What a reachable server reports that its configuration cannot use (issue 12).

A configured value that only restricts the server (a shorter `max_model_len`, a
smaller `kv_cache_bytes`) stays an override (discovery's `resolve`): Longdoc asks
less of the server than it has. A mismatch is the other direction, where acting on
the configuration would send what the server rejects, or lease what it does not
have. Discovery writes such a server's row not healthy, so admission and every other
reader of `healthy` route around it, with the server's own figures and the
mismatches in `backends.mismatches`, field -> {"expected": configured, "reported":
the server's}, until it matches again.
"""

from __future__ import annotations

from typing import Literal

from ingestion.capacity.registry import known_models
from service.backends.capacity import reported_kv_dtype, usable_capacity
from service.backends.probe import BackendState
from service.deployment import BackendConfig

MismatchField = Literal["model", "max_model_len", "kv_cache_bytes", "kv_dtype"]
FIELDS: tuple[MismatchField, ...] = ("model", "max_model_len", "kv_cache_bytes", "kv_dtype")
Mismatches = dict[str, dict[str, int | str]]


def mismatches(state: BackendState, cfg: BackendConfig) -> Mismatches:
    """The fields of `cfg` that the reachable server `state` contradicts:

    - `model`: `cfg.model` is set and the served name is another registry id: the URL
      serves another known model. A served name that is not a registry id (an alias,
      vLLM's --served-model-name) cannot be checked: mapping such a name to the
      registry is what `model` is configured for.
    - `max_model_len`: configured longer than the server's (prompts it would reject).
    - `kv_cache_bytes`: configured larger than the usable pool the server measured
      (with the served model's layout where it serves another); a pool it did not
      measure (no metrics, or only blocks) is what the configured figure stands in for.
    - `kv_dtype`: configured other than a --kv-cache-dtype the server reports (bfloat16,
      fp8*): every block's bytes would be counted wrong. An "auto" pool does not say
      its dtype, and the configured one is what tells it (`capacity.kv_dtype`)."""
    found: Mismatches = {}
    served = state.model
    if cfg.model is not None and served not in (None, cfg.model) and served in known_models():
        found["model"] = {"expected": cfg.model, "reported": str(served)}
    length = state.max_model_len
    if cfg.max_model_len is not None and length is not None and cfg.max_model_len > length:
        found["max_model_len"] = {"expected": cfg.max_model_len, "reported": length}
    if cfg.kv_cache_bytes is not None:
        pool, source = usable_capacity(state, as_served(cfg, found))
        if source == "measured" and pool is not None and cfg.kv_cache_bytes > pool:
            found["kv_cache_bytes"] = {"expected": cfg.kv_cache_bytes, "reported": pool}
    dtype = reported_kv_dtype(state)
    if cfg.kv_dtype is not None and dtype is not None and dtype != cfg.kv_dtype:
        found["kv_dtype"] = {"expected": cfg.kv_dtype, "reported": dtype}
    return found


def as_served(cfg: BackendConfig, found: Mismatches) -> BackendConfig:
    """`cfg` less what would replace the server's own figures: what a mismatched
    server's row is resolved with. Where it serves another registry model, that
    model's layout counts its blocks, not the configured one's."""
    drop: dict[str, None] = {"max_model_len": None, "kv_cache_bytes": None}
    if "model" in found:
        drop["model"] = None
    return cfg.model_copy(update=drop)


def reason(found: Mismatches) -> str:
    """One line for `last_error`, the CLI and the logs."""
    says = {
        "model": "unexpected model: serves {reported!r}, configured {expected!r}",
        "max_model_len": "context too short: serves max_model_len {reported:,}, "
        "configured {expected:,}",
        "kv_cache_bytes": "KV pool too small: {reported:,} B usable, configured "
        "kv_cache_bytes {expected:,}",
        "kv_dtype": "unexpected KV dtype: stores {reported}, configured kv_dtype {expected}",
    }
    return "; ".join(says[name].format(**found[name]) for name in FIELDS if name in found)
