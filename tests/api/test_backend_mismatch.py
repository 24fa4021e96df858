"""A server that is up but reports what its configuration cannot use (issue 12), on
Postgres, through the real refresher, ledger, API, metrics and CLI: it is reachable
and not usable, says why, and gets no job, until it reports what it is configured as.

The server answers as vLLM does (tests/fake_vllm.py: /v1/models, and /metrics
captured from real servers): no real vLLM can be made to serve another model than
the one it loaded. The shorter context is also checked on the real SmolLM2 server
(tests/vllm/test_backends.py).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from ingestion.capacity.kv import KvConfig, kv_layout
from ingestion.capacity.registry import get_model
from service import ledger
from service.backends.discovery import refresh
from service.cli.backends import backends as backends_command
from service.config import Settings
from service.db import get_sessionmaker
from service.deployment import BackendConfig
from service.models import Backend, Document, Job, JobStatus, KvLease, Tenant, utcnow
from tests.conftest import auth
from tests.fake_vllm import GEMMA3_ID, SMOLLM2_ID, FakeVllm
from tests.plans import single_plan

MODEL_MISMATCH = f"unexpected model: serves {SMOLLM2_ID!r}, configured {GEMMA3_ID!r}"
SHORT_CONTEXT = "context too short: serves max_model_len 1,024, configured 2,048"


@pytest.fixture
def sessions(database: str) -> Iterator[sessionmaker[Session]]:
    yield get_sessionmaker()


@pytest.fixture
def role() -> str:
    # The refresh marks every other module's replica down (not configured here), and
    # the module's jobs are the only ones waiting (tests/conftest.py `_leave_no_work`).
    return "gemma"


@pytest.fixture
def server(sessions: sessionmaker[Session]) -> Iterator[FakeVllm]:
    with FakeVllm(SMOLLM2_ID, 2048) as fake:
        yield fake
    with sessions() as s:
        s.execute(delete(Tenant).where(Tenant.name == _tenant_name(fake)))
        s.execute(delete(Backend).where(Backend.url == fake.url))
        s.commit()


def _tenant_name(server: FakeVllm) -> str:
    return f"mismatch-{server.url.rsplit(':', 1)[1]}"


def _settings(role: str, server: FakeVllm) -> Settings:
    config = {"role": role, "url": server.url, "model": GEMMA3_ID, "max_model_len": 2048}
    return Settings(backends=[BackendConfig.model_validate(config)])


def _row(s: Session, url: str) -> Backend:
    row = s.scalars(select(Backend).where(Backend.url == url)).one()
    s.refresh(row)
    return row


def _waiting_job(s: Session, role: str, server: FakeVllm) -> uuid.UUID:
    tenant = Tenant(name=_tenant_name(server))
    s.add(tenant)
    s.flush()
    doc = Document(
        tenant_id=tenant.id, sha256=uuid.uuid4().hex * 2, filename="d.txt",
        media_type="text/plain", size_bytes=1,
    )  # fmt: skip
    s.add(doc)
    s.flush()
    job = Job(
        tenant_id=tenant.id, document_id=doc.id, task="summarize", max_output_tokens=8,
        idempotency_key=uuid.uuid4().hex, status=JobStatus.waiting_for_capacity,
        plan=single_plan(role, 20, 8, model=GEMMA3_ID), role=role, kv_bytes=1 << 20,
        kv_blocks=1, waiting_since=utcnow(),
    )  # fmt: skip
    s.add(job)
    s.commit()
    return job.id


def _admit(s: Session, role: str) -> list[uuid.UUID]:
    res = ledger.try_admit(s, role, utcnow(), 60)
    return [a.job_id for a in res.admitted]


def _leases(s: Session, job_id: uuid.UUID) -> list[uuid.UUID]:
    return list(s.scalars(select(KvLease.backend_id).where(KvLease.job_id == job_id)))


def _views(client: Any, key: str, backend_id: uuid.UUID) -> dict[str, Any]:
    resp = client.get("/v1/backends", headers=auth(key))
    assert resp.status_code == 200, resp.text
    (item,) = [b for b in resp.json()["items"] if b["id"] == str(backend_id)]
    found: dict[str, Any] = item
    return found


def _gauges(client: Any, key: str, backend_id: uuid.UUID) -> dict[tuple[str, str], float]:
    """This backend's samples: (metric, field) -> value; field "" where it has none."""
    resp = client.get("/metrics", headers=auth(key))
    assert resp.status_code == 200, resp.text
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            if sample.labels.get("backend") == str(backend_id):
                out[(sample.name, sample.labels.get("field", ""))] = sample.value
    return out


def _cli_line(env: dict[str, str], url: str) -> str:
    cli = typer.Typer()
    cli.command()(backends_command)
    table = CliRunner().invoke(cli, [], env=env)
    assert table.exit_code == 0, table.output
    (line,) = [x for x in table.stdout.splitlines() if url in x]
    return line


def test_a_mismatched_server_is_up_shown_and_routed_around_until_it_matches(
    client: Any,
    api_key: str,
    admin_key: str,
    sessions: sessionmaker[Session],
    role: str,
    server: FakeVllm,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="service.backends.discovery")
    settings = _settings(role, server)
    with sessions() as s:
        refresh(s, settings, utcnow())
        row = _row(s, server.url)
        backend_id = row.id
        assert (row.healthy, row.last_error) == (False, MODEL_MISMATCH)
        assert row.mismatches == {"model": {"expected": GEMMA3_ID, "reported": SMOLLM2_ID}}
        # What the server reports, kept as reported: its model, context and pool in
        # its own model's blocks (364 bf16 blocks of 128 tokens, one held back).
        per_block = kv_layout(get_model(SMOLLM2_ID), KvConfig(block_size=128, kv_dtype="bf16"))
        assert (row.model, row.max_model_len) == (SMOLLM2_ID, 2048)
        assert (row.kv_capacity_bytes, row.capacity_source) == (
            363 * per_block.bytes_per_block,
            "measured",
        )
        assert row.overrides is None
        job_id = _waiting_job(s, role, server)
        assert job_id not in _admit(s, role)
        assert _leases(s, job_id) == []
        status = s.scalar(select(Job.status).where(Job.id == job_id))
        assert status == JobStatus.waiting_for_capacity
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"backend {server.url} is up but routed around: {MODEL_MISMATCH}" in warned

    admin = _views(client, admin_key, backend_id)
    assert (admin["reachable"], admin["healthy"], admin["usable"]) == (True, False, False)
    assert admin["mismatches"] == {"model": {"expected": GEMMA3_ID, "reported": SMOLLM2_ID}}
    assert admin["last_error"] == MODEL_MISMATCH and admin["model"] == SMOLLM2_ID
    tenant = _views(client, api_key, backend_id)
    assert (tenant["healthy"], tenant["usable"]) == (False, False)
    assert "mismatches" not in tenant and "reachable" not in tenant
    gauges = _gauges(client, admin_key, backend_id)
    assert gauges[("longdoc_backend_up", "")] == 1
    assert gauges[("longdoc_backend_usable", "")] == 0
    assert gauges[("longdoc_backend_mismatch", "model")] == 1
    for name in ("max_model_len", "kv_cache_bytes", "kv_dtype"):
        assert gauges[("longdoc_backend_mismatch", name)] == 0, name

    # The right model, but started with a shorter context than configured: prompts
    # Longdoc would send are ones it rejects.
    server.serve(GEMMA3_ID, 1024)
    caplog.clear()
    env = {"LONGDOC_BACKENDS": json.dumps(settings.model_dump(mode="json")["backends"])}
    line = _cli_line(env, server.url)  # the command refreshes the rows itself
    assert line.endswith(f"up, mismatched: {SHORT_CONTEXT}"), line
    with sessions() as s:
        row = _row(s, server.url)
        assert row.mismatches == {"max_model_len": {"expected": 2048, "reported": 1024}}
        assert (row.healthy, row.model, row.max_model_len) == (False, GEMMA3_ID, 1024)
        assert job_id not in _admit(s, role) and _leases(s, job_id) == []
    gauges = _gauges(client, admin_key, backend_id)
    assert gauges[("longdoc_backend_mismatch", "model")] == 0
    assert gauges[("longdoc_backend_mismatch", "max_model_len")] == 1
    assert gauges[("longdoc_backend_up", "")] == 1

    # As configured: taken again, and the job placed on it.
    server.serve(GEMMA3_ID, 2048)
    with sessions() as s:
        refresh(s, settings, utcnow())
        row = _row(s, server.url)
        assert (row.healthy, row.mismatches, row.last_error) == (True, None, None)
        assert job_id in _admit(s, role)
        assert _leases(s, job_id) == [backend_id]
    again = f"backend {server.url} matches its configuration again"
    assert again in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    admin = _views(client, admin_key, backend_id)
    assert (admin["reachable"], admin["healthy"], admin["usable"]) == (True, True, True)
    assert admin["mismatches"] == {}
    gauges = _gauges(client, admin_key, backend_id)
    assert gauges[("longdoc_backend_usable", "")] == 1
    assert sum(v for (name, _), v in gauges.items() if name == "longdoc_backend_mismatch") == 0
    assert _cli_line(env, server.url).endswith("  up")


def test_a_mismatched_server_that_goes_away_is_down_not_mismatched(
    client: Any, admin_key: str, sessions: sessionmaker[Session], role: str, server: FakeVllm
) -> None:
    settings = _settings(role, server)
    with sessions() as s:
        refresh(s, settings, utcnow())
        backend_id = _row(s, server.url).id
    server.stop()
    with sessions() as s:
        refresh(s, settings, utcnow(), timeout=2)
        row = _row(s, server.url)
        assert (row.healthy, row.mismatches) == (False, None)
        assert row.last_error and "ConnectError" in row.last_error
    admin = _views(client, admin_key, backend_id)
    assert (admin["reachable"], admin["mismatches"]) == (False, {})
    gauges = _gauges(client, admin_key, backend_id)
    assert gauges[("longdoc_backend_up", "")] == 0
    assert gauges[("longdoc_backend_mismatch", "model")] == 0


def test_a_job_with_only_a_mismatched_replica_fails_in_time_naming_it_by_id(
    sessions: sessionmaker[Session], role: str, server: FakeVllm
) -> None:
    from workers.jobs.tasks import _no_backend_for_too_long

    settings = _settings(role, server)
    with sessions() as s:
        refresh(s, settings, utcnow())
        backend_id = _row(s, server.url).id
        job_id = _waiting_job(s, role, server)
        long_ago = utcnow() - timedelta(seconds=settings.backend_down_timeout_s + 60)
        s.execute(update(Job).where(Job.id == job_id).values(waiting_since=long_ago))
        s.commit()
    with sessions() as s:
        assert _no_backend_for_too_long(s, job_id, role, settings)
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.failed
        assert job.error_code == "backend_down"
        reason = job.error_reason or ""
    assert f"no {role} backend was up and usable for " in reason, reason
    # Named by id, as not usable; what is wrong with it and where it is are the operator's.
    assert f"not usable: {backend_id}" in reason, reason
    assert server.url not in reason and SMOLLM2_ID not in reason, reason
