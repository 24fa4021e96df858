"""Backend discovery: what each configured vLLM server really is, kept in `backends`.

`probe` (service/backends/probe.py) asks one server (`GET /v1/models`, `GET /metrics`);
`resolve` applies the configured overrides; `refresh` writes every configured
backend's row, which the worker does on an interval (`workers/schedule.py`).
Readers (the API's `backend_views.describe`, the CLI) only read the rows.

Capacity is never guessed: a server whose /metrics is missing or malformed has
unknown KV capacity, which a configured `kv_cache_bytes` may stand in for; without
one the backend is not usable for admission. An override that disagrees with the
server is applied, logged and recorded in the row's `overrides`.

The usable pool is `(num_gpu_blocks - 1) x bytes_per_block`: vLLM holds one block
back (the null block), and its blocks need not fill `kv_cache_memory_bytes`. When the
served model is in the registry (its served name, or the configured `model`), the
bytes per block come from `ingestion.capacity.kv`, and a server that reports blocks but no
bytes (vLLM on a GPU without `--kv-cache-memory-bytes`) gets a "derived" capacity.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ingestion.capacity.kv import KvConfig, KvDtype, KvLayout, kv_layout
from ingestion.capacity.pool import num_blocks
from ingestion.capacity.registry import UnknownModelError, get_model
from service.backends.probe import BackendState, normalize_url, probe
from service.config import Settings
from service.deployment import BackendConfig
from service.models import Backend

log = logging.getLogger(__name__)

CapacitySource = Literal["measured", "derived", "configured", "unknown"]
_SOURCES: tuple[CapacitySource, ...] = ("measured", "derived", "configured", "unknown")
NOT_CONFIGURED = "not configured"
_MAX_PARALLEL_PROBES = 8
# What `--kv-cache-dtype auto` can store for the registry's models: their bf16, or
# fp32 where a CPU server runs --dtype float32 (service/backends/serving_dtype.py).
_AUTO_DTYPES: tuple[KvDtype, ...] = ("bf16", "fp32")


@dataclass(frozen=True)
class Resolved:
    """A reachable backend's values after the configured overrides."""

    state: BackendState
    max_model_len: int | None
    kv_capacity_bytes: int | None
    capacity_source: CapacitySource
    # field -> {"configured": ..., "measured": ...}, only where configuration won.
    overrides: dict[str, dict[str, int | None]] = field(default_factory=dict)
    kv_dtype: KvDtype | None = None


def _pick(
    name: str, measured: int | None, configured: int | None, overrides: dict[str, Any]
) -> int | None:
    if configured is None or configured == measured:
        return measured
    overrides[name] = {"configured": configured, "measured": measured}
    return configured


def _layout(state: BackendState, cfg: BackendConfig, dtype: KvDtype) -> KvLayout | None:
    model_id = cfg.model or state.model
    if model_id is None or state.block_size is None:
        return None
    try:
        spec = get_model(model_id)
        return kv_layout(spec, KvConfig(block_size=state.block_size, tp=cfg.tp, kv_dtype=dtype))
    except (UnknownModelError, ValueError):
        return None


def kv_dtype(state: BackendState, cfg: BackendConfig) -> KvDtype | None:
    """The dtype the server stores its KV cache in; None when it is one Longdoc does not
    account for (float16, int4, ...) or cannot tell (an "auto" pool of a model not in
    the registry).

    A set --kv-cache-dtype is reported. "auto" stores the model's dtype, which vLLM
    does not report: bf16 for the registry's models on a GPU, fp32 for a CPU server
    started with --dtype float32. Then the configured `kv_dtype` holds; else the one
    whose registry block size cuts the reported pool into exactly the reported blocks
    (vLLM's num_blocks = pool bytes // bytes per block; fp32 blocks are twice bf16's,
    so at most one matches); else bf16."""
    cache_dtype = state.cache_dtype
    if cache_dtype == "bfloat16":
        return "bf16"
    if cache_dtype is not None and cache_dtype.startswith("fp8"):
        return "fp8"
    if cache_dtype not in (None, "auto"):
        return None
    if cfg.kv_dtype is not None:
        return cfg.kv_dtype
    layouts = {dtype: _layout(state, cfg, dtype) for dtype in _AUTO_DTYPES}
    blocks, reported = state.num_blocks, state.kv_cache_bytes
    if None in layouts.values():
        return None
    if blocks is not None and reported is not None:
        for dtype, layout in layouts.items():
            if layout is not None and num_blocks(layout, reported) == blocks:
                return dtype
    return "bf16"


def bytes_per_block(state: BackendState, cfg: BackendConfig) -> int | None:
    """One block of the server's pool, from the registry; None when the served model
    (or the configured `model`) is not in it, or its dtype or layout is not known."""
    dtype = kv_dtype(state, cfg)
    layout = None if dtype is None else _layout(state, cfg, dtype)
    return None if layout is None else layout.bytes_per_block


def usable_capacity(state: BackendState, cfg: BackendConfig) -> tuple[int | None, CapacitySource]:
    """The server's usable KV pool in bytes, before overrides, and how it was found."""
    blocks, reported = state.num_blocks, state.kv_cache_bytes
    per_block = bytes_per_block(state, cfg)
    if reported is None:
        if blocks is None or per_block is None:
            return None, "unknown"
        return (blocks - 1) * per_block, "derived"
    if blocks is None:  # no block count: nothing to take the null block from
        return reported, "measured"
    if per_block is not None and blocks * per_block <= reported:
        return (blocks - 1) * per_block, "measured"
    # Model not in the registry (or its layout does not fit the reported bytes): the
    # reported bytes, less one block's share of them for the null block vLLM holds back.
    return reported - reported // blocks, "measured"


def resolve(state: BackendState, cfg: BackendConfig) -> Resolved:
    overrides: dict[str, dict[str, int | None]] = {}
    length = _pick("max_model_len", state.max_model_len, cfg.max_model_len, overrides)
    measured, source = usable_capacity(state, cfg)
    # A derived figure is not measured: the override records the server's None.
    kv = _pick(
        "kv_cache_bytes", measured if source == "measured" else None, cfg.kv_cache_bytes, overrides
    )
    if "kv_cache_bytes" in overrides:
        source = "configured"
    elif kv is None:
        kv = measured
    return Resolved(state, length, kv, source, overrides, kv_dtype(state, cfg))


def capacity_source(row: Backend) -> CapacitySource:
    if row.kv_capacity_bytes is None:
        return "unknown"
    if row.capacity_source in _SOURCES:
        return row.capacity_source
    # Rows written before migration 0003 recorded no source.
    return "configured" if "kv_cache_bytes" in (row.overrides or {}) else "measured"


def usable(row: Backend) -> bool:
    """Whether admission may place work here: up, with a known context and pool."""
    return row.healthy and row.max_model_len is not None and row.kv_capacity_bytes is not None


# --- the rows ---------------------------------------------------------------------------


def _upsert(session: Session, insert_values: dict[str, Any], update_keys: list[str]) -> None:
    # ON CONFLICT, not select-then-insert: every worker runs a refresher.
    values = {"id": uuid.uuid4(), **insert_values}
    changes = {k: insert_values[k] for k in update_keys}
    if session.get_bind().dialect.name == "postgresql":
        pg = postgresql.insert(Backend).values(values)
        session.execute(pg.on_conflict_do_update(index_elements=[Backend.url], set_=changes))
    else:
        lite = sqlite.insert(Backend).values(values)
        session.execute(lite.on_conflict_do_update(index_elements=[Backend.url], set_=changes))


def _log_changes(old: Backend | None, url: str, new: Resolved | None, error: str | None) -> None:
    was_up = old is not None and old.healthy
    if new is None:
        if was_up or old is None or old.last_error != error:
            log.warning("backend %s is down: %s", url, error)
        return
    if not was_up:
        log.info("backend %s is up: %s", url, new.state.model)
    if new.capacity_source == "derived":
        if old is None or old.capacity_source != "derived":
            log.info(
                "backend %s: no kv_cache_memory_bytes; KV capacity %s B derived from its %s "
                "blocks and the registry's layout",
                url,
                new.kv_capacity_bytes,
                new.state.num_blocks,
            )
    elif new.state.metrics_error and (old is None or old.last_error != new.state.metrics_error):
        log.warning("backend %s: KV capacity not measured: %s", url, new.state.metrics_error)
    before = (old.overrides if old is not None else None) or {}
    for name, values in new.overrides.items():
        # Warn on change, not on every interval; the row shows it all the time.
        if before.get(name) != values:
            log.warning(
                "backend %s: configured %s=%s overrides the measured %s",
                url,
                name,
                values["configured"],
                values["measured"],
            )
    for name in before.keys() - new.overrides.keys():
        log.warning("backend %s: %s no longer overridden; using the measured value", url, name)


def refresh(
    session: Session, settings: Settings, now: datetime, timeout: float | None = None
) -> None:
    """Probe every configured backend and write its row; commits."""
    configs: dict[str, BackendConfig] = {}
    for cfg in settings.backends:
        url = normalize_url(cfg.url)
        if url in configs:
            log.warning("backend %s configured twice; using the first (%s)", url, configs[url].role)
            continue
        configs[url] = cfg
    wait = timeout or settings.backend_probe_timeout_s
    # Probe before touching the database: no transaction stays open across the network.
    with ThreadPoolExecutor(max_workers=max(1, min(len(configs), _MAX_PARALLEL_PROBES))) as pool:
        states = list(pool.map(lambda u: probe(u, wait), sorted(configs)))
    # Every row locked up front, by id: the ledger's order (`service/ledger/`), so a
    # refresh and an admission, which locks its role's rows by id, cannot deadlock.
    rows = select(Backend).order_by(Backend.id).with_for_update(key_share=True)
    old = {row.url: row for row in session.scalars(rows)}
    for state in states:  # sorted by URL: new rows are inserted in one order
        cfg = configs[state.url]
        base = {"role": cfg.role, "url": state.url, "updated_at": now}
        if state.error is not None:
            _log_changes(old.get(state.url), state.url, None, state.error)
            down = {**base, "healthy": False, "last_error": state.error}
            # Keep the last measured figures: they say what comes back, if it does.
            _upsert(session, down, ["role", "healthy", "last_error", "updated_at"])
            continue
        res = resolve(state, cfg)
        _log_changes(old.get(state.url), state.url, res, None)
        up = {
            **base,
            "model": state.model,
            "max_model_len": res.max_model_len,
            "block_size": state.block_size,
            "num_blocks": state.num_blocks,
            "kv_capacity_bytes": res.kv_capacity_bytes,
            "kv_capacity_tokens": state.kv_cache_tokens,
            "kv_dtype": res.kv_dtype,
            "capacity_source": None if res.capacity_source == "unknown" else res.capacity_source,
            "overrides": res.overrides or None,
            "healthy": True,
            # Derived capacity answers what the metrics lacked; the source says so.
            "last_error": None if res.capacity_source == "derived" else state.metrics_error,
            "last_seen_at": now,
        }
        _upsert(session, up, [k for k in up if k != "url"])
    for url, row in sorted(old.items()):
        if url not in configs and (row.healthy or row.last_error != NOT_CONFIGURED):
            log.warning("backend %s is no longer configured; marked down", url)
    # Never deleted: leases and jobs point at these rows, and the history is useful.
    session.execute(
        update(Backend)
        .where(
            Backend.url.not_in(list(configs)),
            or_(Backend.healthy.is_(True), Backend.last_error.is_distinct_from(NOT_CONFIGURED)),
        )
        .values(healthy=False, last_error=NOT_CONFIGURED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.expire_all()
