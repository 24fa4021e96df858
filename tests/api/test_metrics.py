"""`GET /metrics` scraped over a real socket: the state gauges say what the tables
hold, no tenant id or backend URL is in them, and only an admin key (or
`metrics_public`) may read them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from service.config import get_settings
from service.db import get_sessionmaker, write_transaction
from service.keys import authenticate
from service.models import Backend, Tenant
from tests.conftest import api_settings, auth, corpus_file

SMALL_PDF = "pdf/us-va-form-21-0966.pdf"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(base: str, key: str) -> str:
    resp = httpx.get(f"{base}/metrics", headers=auth(key), timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return resp.text


def jobs(text: str, status: str) -> float:
    return samples(text)[("longdoc_jobs", frozenset({("status", status)}))]


@pytest.fixture
def backend_row() -> Iterator[Backend]:
    """A backend as the refresher would have written it; no worker runs here to route
    to it, and it is gone after the test."""
    row = Backend(
        role="gemma",
        url=f"http://metrics-{uuid.uuid4().hex[:8]}.invalid:8000",
        model="google/gemma-4-31B-it",
        kv_capacity_bytes=1_000_000,
        healthy=True,
    )
    with get_sessionmaker()() as session, write_transaction(session):
        session.add(row)
    yield row
    with get_sessionmaker()() as session, write_transaction(session):
        session.delete(session.get(Backend, row.id))


def test_jobs_by_status_follow_a_new_job_and_name_no_tenant(
    base: str, api_key: str, admin_key: str, backend_row: Backend
) -> None:
    before = scrape(base, admin_key)
    with corpus_file(SMALL_PDF).open("rb") as f:
        resp = httpx.post(
            f"{base}/v1/documents?task=summarize",
            headers=auth(api_key),
            files={"file": (f"m-{uuid.uuid4().hex}.pdf", f.read() + b"\n%" + uuid.uuid4().bytes)},
            timeout=60,
        )
    assert resp.status_code in (200, 202), resp.text
    assert resp.json()["job"]["status"] == "queued"  # no worker here parses it
    after = scrape(base, admin_key)
    assert jobs(after, "queued") == jobs(before, "queued") + 1
    for status in ("waiting_for_capacity", "running", "succeeded", "failed", "cancelled"):
        assert (jobs(after, status), status) == (jobs(before, status), status)
    got = samples(after)
    assert ("longdoc_batches", frozenset({("status", "in_progress")})) in got

    labels = frozenset(
        {("backend", str(backend_row.id)), ("role", "gemma"), ("model", backend_row.model)}
    )
    assert got[("longdoc_kv_capacity_bytes", labels)] == 1_000_000
    assert got[("longdoc_kv_free_bytes", labels)] == 1_000_000
    assert got[("longdoc_kv_leased_bytes", labels)] == 0
    assert got[("longdoc_backend_up", labels)] == 1
    # Up, but with no context known: not usable, and no context sample.
    assert got[("longdoc_backend_usable", labels)] == 0
    assert ("longdoc_backend_context_tokens", labels) not in got
    assert got[("longdoc_queue_depth", frozenset({("role", "none")}))] >= 1
    # The upload's parse waits in the broker: no worker runs in this module.
    ingest = ("longdoc_broker_queue_messages", frozenset({("queue", "ingest")}))
    assert got[ingest] == samples(before)[ingest] + 1
    assert got[("longdoc_broker_up", frozenset())] == 1

    with get_sessionmaker()() as session:
        principal = authenticate(session, api_key)
        tenants = session.execute(select(Tenant.id, Tenant.name)).all()
    assert principal is not None and principal.tenant_id in {t.id for t in tenants}
    for tenant_id, name in tenants:  # ours and every other tenant's, in any spelling
        assert str(tenant_id) not in after and tenant_id.hex not in after and name not in after
    assert backend_row.url not in after and ".invalid" not in after


def test_only_an_admin_key_reads_metrics_unless_public(
    base: str, api_key: str, admin_key: str
) -> None:
    none = httpx.get(f"{base}/metrics", timeout=30)
    assert none.status_code == 401, none.text
    assert none.json()["error"]["code"] == "missing_key"
    tenant = httpx.get(f"{base}/metrics", headers=auth(api_key), timeout=30)
    assert tenant.status_code == 403, tenant.text
    assert "admin key" in tenant.json()["error"]["reason"]
    public = get_settings().model_copy(update={"metrics_public": True})
    with api_settings(public):
        opened = httpx.get(f"{base}/metrics", timeout=30)
    assert opened.status_code == 200, opened.text
    assert "longdoc_jobs" in opened.text
