"""Backend discovery: what each configured vLLM server really is, kept in `backends`.

`probe` (service/backends/probe.py) asks one server (`GET /v1/models`, `GET /metrics`);
`resolve` applies the configured overrides; `refresh` writes every configured
backend's row, which the worker does on an interval (`workers/schedule.py`).
Readers (the API's `backend_views.describe`, the CLI, the metrics) only read the rows.

Capacity is never guessed: a server whose /metrics is missing or malformed has
unknown KV capacity, which a configured `kv_cache_bytes` may stand in for; without
one the backend is not usable for admission. The usable pool and its dtype are
figured in `service/backends/capacity.py`.

A configured value that asks less of the server than it reports (a shorter
`max_model_len`, a smaller `kv_cache_bytes`) is an override: applied, logged on
change and recorded in the row's `overrides`. One the server contradicts (another
registry model, a longer context, a larger pool than it measured, another KV dtype
than its --kv-cache-dtype; `service/backends/mismatch.py`) is a mismatch: the row is
written not healthy, so admission routes around it, with the server's own figures,
the reason in `last_error` and the fields in `mismatches`, until it matches again.
A row is `reachable` when its last probe got an answer: healthy, or mismatched.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ingestion.capacity.kv import KvDtype
from service.backends.capacity import CapacitySource, kv_dtype, usable_capacity
from service.backends.mismatch import Mismatches, as_served, mismatches, reason
from service.backends.probe import BackendState, normalize_url, probe
from service.config import Settings
from service.deployment import BackendConfig
from service.models import Backend

log = logging.getLogger(__name__)

_SOURCES: tuple[CapacitySource, ...] = ("measured", "derived", "configured", "unknown")
NOT_CONFIGURED = "not configured"
_MAX_PARALLEL_PROBES = 8


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
    """Whether admission may place work here: up, serving what it is configured to,
    with a known context and pool."""
    known = row.max_model_len is not None and row.kv_capacity_bytes is not None
    return row.healthy and not row.mismatches and known


def state(healthy: bool, mismatched: bool, usable: bool) -> str:
    """How a backend stands, in the words the status page and `longdoc backends` use:
    up, down, up but not usable (no context or pool known yet), up but mismatched."""
    if mismatched:  # reachable, and routed around: see service/backends/mismatch.py
        return "up, mismatched"
    if not healthy:
        return "down"
    return "up" if usable else "up, not usable"


def reachable(row: Backend) -> bool:
    """Whether its last probe got an answer: a mismatched server is up, yet not healthy.
    Whoever marks a row down clears its `mismatches` (`refresh`, the job runner)."""
    return row.healthy or bool(row.mismatches)


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


def _log_changes(
    old: Backend | None, url: str, new: Resolved | None, error: str | None, bad: Mismatches
) -> None:
    was_up = old is not None and old.healthy
    if new is None:
        if was_up or old is None or old.last_error != error:
            log.warning("backend %s is down: %s", url, error)
        return
    was_bad = (old.mismatches if old is not None else None) or {}
    if bad:
        # Warn on change, not on every interval; the row shows it all the time.
        if was_bad != bad:
            log.warning("backend %s is up but routed around: %s", url, reason(bad))
        return
    if was_bad:
        log.warning("backend %s matches its configuration again", url)
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
    _log_overrides(old, url, new)


def _log_overrides(old: Backend | None, url: str, new: Resolved) -> None:
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


def _metrics_error(state: BackendState, res: Resolved) -> str | None:
    # Derived capacity answers what the metrics lacked; the source says so.
    return None if res.capacity_source == "derived" else state.metrics_error


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
            _log_changes(old.get(state.url), state.url, None, state.error, {})
            down = {**base, "healthy": False, "last_error": state.error, "mismatches": None}
            # Keep the last measured figures: they say what comes back, if it does.
            _upsert(session, down, [k for k in down if k != "url"])
            continue
        bad = mismatches(state, cfg)
        # Mismatched: the server's own figures, none of the configuration's in place.
        res = resolve(state, as_served(cfg, bad) if bad else cfg)
        _log_changes(old.get(state.url), state.url, res, None, bad)
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
            "mismatches": bad or None,
            "healthy": not bad,
            "last_error": reason(bad) if bad else _metrics_error(state, res),
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
        .values(healthy=False, last_error=NOT_CONFIGURED, mismatches=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    session.expire_all()
