"""The gauges of state, computed from the database when the API is scraped: jobs and
batches by status, jobs waiting for admission per role, KV bytes per backend, backend
health. One grouped query each, at scrape time, so a value is what the tables say
now: counters kept by the processes that change a status would drift whenever one of
them died between its commit and its increment, and would double-count across workers.

Only the API serves these (one endpoint, however many workers): summed over several
targets they would count each job once per target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.backends.discovery import reachable, usable
from service.backends.mismatch import FIELDS as MISMATCH_FIELDS
from service.ledger.leases import capacity_of
from service.metrics.broker import BrokerCollector
from service.models import Backend, Batch, BatchStatus, Job, JobStatus, utcnow

GAUGES = (
    "longdoc_jobs",
    "longdoc_batches",
    "longdoc_queue_depth",
    "longdoc_kv_capacity_bytes",
    "longdoc_kv_leased_bytes",
    "longdoc_kv_free_bytes",
    "longdoc_kv_leases",
    "longdoc_backend_up",
    "longdoc_backend_usable",
    "longdoc_backend_context_tokens",
    "longdoc_backend_mismatch",
)
_WAITING = (JobStatus.queued, JobStatus.waiting_for_capacity)
# Backends are named by id, role and model, never by URL: the scrape may be open to
# whoever can reach the API (`metrics_public`), and the URLs are the operators' own.
_BACKEND_LABELS = ["backend", "role", "model"]


def _by_status(
    session: Session,
    column: InstrumentedAttribute[JobStatus] | InstrumentedAttribute[BatchStatus],
    statuses: type[JobStatus] | type[BatchStatus],
) -> dict[str, int]:
    counts = {s.value: 0 for s in statuses}  # every status, so a series never vanishes
    for status, n in session.execute(select(column, func.count()).group_by(column)):
        counts[str(status)] = int(n)  # StrEnum: its value
    return counts


class StateCollector(Collector):
    """The state as `session` reads it; made for one scrape (`render`)."""

    def __init__(self, session: Session, now: Callable[[], datetime] = utcnow):
        self.session, self.now = session, now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._jobs(self.session)
        yield from self._backends(self.session)

    def _jobs(self, session: Session) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(
            "longdoc_jobs",
            "Jobs by status (map-reduce requests included), now.",
            labels=["status"],
        )
        for status, n in _by_status(session, Job.status, JobStatus).items():
            jobs.add_metric([status], n)
        yield jobs
        batches = GaugeMetricFamily("longdoc_batches", "Batches by status, now.", labels=["status"])
        for status, n in _by_status(session, Batch.status, BatchStatus).items():
            batches.add_metric([status], n)
        yield batches
        depth = GaugeMetricFamily(
            "longdoc_queue_depth",
            "Jobs not yet admitted (queued or waiting for KV) per model role; "
            "role none: not routed yet (its document is being parsed).",
            labels=["role"],
        )
        stmt = select(Job.role, func.count()).where(Job.status.in_(_WAITING)).group_by(Job.role)
        seen: dict[str, int] = {}
        for role, n in session.execute(stmt):
            seen[role or "none"] = seen.get(role or "none", 0) + int(n)
        for role in sorted(seen.keys() | set(_roles(session))):
            depth.add_metric([role], seen.get(role, 0))
        yield depth

    def _backends(self, session: Session) -> Iterator[GaugeMetricFamily]:
        doc = "KV-cache bytes per backend, from the ledger: "
        cap = GaugeMetricFamily(
            "longdoc_kv_capacity_bytes", doc + "its pool.", labels=_BACKEND_LABELS
        )
        leased = GaugeMetricFamily(
            "longdoc_kv_leased_bytes", doc + "held by unexpired leases.", labels=_BACKEND_LABELS
        )
        free = GaugeMetricFamily(
            "longdoc_kv_free_bytes", doc + "capacity less leased.", labels=_BACKEND_LABELS
        )
        leases = GaugeMetricFamily(
            "longdoc_kv_leases", "Unexpired KV leases per backend.", labels=_BACKEND_LABELS
        )
        up = GaugeMetricFamily(
            "longdoc_backend_up",
            "1 when the backend's last probe reached it (also when what it reports does "
            "not match its configuration), 0 when it did not.",
            labels=_BACKEND_LABELS,
        )
        usable_ = GaugeMetricFamily(
            "longdoc_backend_usable",
            "1 when admission may place work there: up, as configured, with a known "
            "context and KV pool (a server up but mismatched, or reporting neither, is 0, "
            "and routed around).",
            labels=_BACKEND_LABELS,
        )
        context = GaugeMetricFamily(
            "longdoc_backend_context_tokens",
            "The context length the server reports (max_model_len).",
            labels=_BACKEND_LABELS,
        )
        mismatch = GaugeMetricFamily(
            "longdoc_backend_mismatch",
            "1 when the server reports what its configuration cannot use, per field: model "
            "(another registry model), max_model_len (shorter), kv_cache_bytes (a smaller "
            "pool), kv_dtype (another --kv-cache-dtype); 0 otherwise.",
            labels=[*_BACKEND_LABELS, "field"],
        )
        rows = session.scalars(select(Backend).order_by(Backend.role, Backend.url)).all()
        for row, c in zip(rows, capacity_of(session, rows, self.now()), strict=True):
            labels = [str(c.backend_id), c.role, row.model or "unknown"]
            usable_.add_metric(labels, 1.0 if usable(row) else 0.0)
            if row.max_model_len is not None:
                context.add_metric(labels, row.max_model_len)
            if c.total_bytes is not None:  # unknown capacity: no sample, rather than a 0
                cap.add_metric(labels, c.total_bytes)
            if c.free_bytes is not None:
                free.add_metric(labels, c.free_bytes)
            leased.add_metric(labels, c.leased_bytes)
            leases.add_metric(labels, c.leases)
            up.add_metric(labels, 1.0 if reachable(row) else 0.0)
            bad = row.mismatches or {}
            for name in MISMATCH_FIELDS:  # every field, so a series never vanishes
                mismatch.add_metric([*labels, name], 1.0 if name in bad else 0.0)
        yield from (cap, leased, free, leases, up, usable_, context, mismatch)


def _roles(session: Session) -> list[str]:
    return list(session.scalars(select(Backend.role).distinct()))


def render(session: Session) -> bytes:
    """The exposition text of one scrape: a registry built for it, so nothing a scrape
    reads outlives it (and no process-wide registry of the API's is involved)."""
    registry = CollectorRegistry(auto_describe=False)
    # The broker first: its round trip (up to its timeout) is not made while the session
    # holds a database connection (the key check released the one it used).
    registry.register(BrokerCollector())
    registry.register(StateCollector(session))
    return generate_latest(registry)
