"""Backend discovery (service/backends/discovery.py) against the session's real SmolLM2 server.

Rows go to the session's fresh Postgres database (tests/conftest.py). A backend
dies and returns through a real TCP relay in front of the real server; broken
/metrics come from a real HTTP front that relays /v1/models from the server and
answers /metrics badly. Nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from ingestion.capacity.kv import KvConfig, kv_layout
from ingestion.capacity.registry import get_model
from service.api.backend_views import describe
from service.backends.discovery import (
    NOT_CONFIGURED,
    BackendState,
    capacity_source,
    probe,
    refresh,
    resolve,
)
from service.backends.metrics import parse_cache_config
from service.backends.server import HOST, VllmServer, free_port
from service.backends.serving_dtype import KV_DTYPE, cpu_serving_dtype
from service.cli.backends import backends as backends_command
from service.config import Settings
from service.db import make_engine
from service.deployment import BackendConfig
from service.migrate import upgrade
from service.models import Backend, Document, Job, KvLease, Tenant, utcnow
from service.periodic import Scheduler
from tests.conftest import auth, wait_for
from tests.netrelay import Forwarder
from tests.vllm.conftest import MAX_MODEL_LEN, SMOLLM2
from workers.schedule import refresher_job

GIB = 1 << 30
MIB = 1 << 20
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # its registry id; served as SMOLLM2
LOGGER = "service.backends.discovery"
# Every URL this module configures; its rows are removed when the module ends.
_USED: set[str] = set()


# --- a real relay and a real front --------------------------------------------------------


class MetricsFront:
    """Relays the server's /v1/models; answers /metrics according to `mode`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "404"
        self.served_as: str | None = None  # rename the served model in /v1/models
        self.http = ThreadingHTTPServer((HOST, 0), self._handler())
        self.url = f"http://{HOST}:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def metrics(self) -> bytes | None:
        real = httpx.get(f"{self.upstream}/metrics").raise_for_status().text
        real_bytes = parse_cache_config(real)["kv_cache_memory_bytes"]
        bodies = {
            "garbage": "<html><body>502 Bad Gateway</body></html>\n\x00 not prometheus",
            # As vLLM on a GPU without --kv-cache-memory-bytes: blocks, but no bytes.
            "no-bytes": real.replace(
                f'kv_cache_memory_bytes="{real_bytes}"', 'kv_cache_memory_bytes="None"'
            ),
            "huge": real.replace(
                f'kv_cache_memory_bytes="{real_bytes}"', f'kv_cache_memory_bytes="{10**30}"'
            ),
        }
        return bodies[self.mode].encode() if self.mode in bodies else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    body: bytes | None = httpx.get(f"{front.upstream}/v1/models").content
                    if front.served_as is not None:
                        body = body.replace(
                            f'"{SMOLLM2}"'.encode(), f'"{front.served_as}"'.encode()
                        )
                elif self.path == "/metrics":
                    body = front.metrics()
                else:
                    body = None
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sessions(database: str) -> Iterator[sessionmaker[Session]]:
    from service.db import get_sessionmaker

    maker = get_sessionmaker()
    yield maker
    # The database is the session's: leave no backend of ours for other modules.
    with maker() as session:
        session.execute(delete(Tenant).where(Tenant.name.like("backends-test-%")))
        session.execute(delete(Backend).where(Backend.url.in_(sorted(_USED))))
        session.commit()


@pytest.fixture
def forwarder(smollm2_server: VllmServer) -> Iterator[Forwarder]:
    relay = Forwarder(smollm2_server.port)
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def front(smollm2_server: VllmServer) -> Iterator[MetricsFront]:
    server = MetricsFront(smollm2_server.url)
    yield server
    server.http.shutdown()
    server.http.server_close()


def settings(*backends: dict[str, object]) -> Settings:
    configs = [BackendConfig.model_validate(b) for b in backends]
    _USED.update(str(c.url).rstrip("/") for c in configs)
    return Settings(backends=configs)


def row(session: Session, url: str) -> Backend:
    found = session.scalars(select(Backend).where(Backend.url == url)).one()
    session.refresh(found)
    return found


def real_cache_config(server: VllmServer) -> dict[str, str]:
    return parse_cache_config(httpx.get(f"{server.url}/metrics").raise_for_status().text)


# The session server's --dtype (its fixture takes the default), which its "auto" KV
# cache is stored in.
SERVED_KV_DTYPE = KV_DTYPE[cpu_serving_dtype()]


def smollm2_bytes_per_block() -> int:
    cfg = KvConfig(block_size=128, kv_dtype=SERVED_KV_DTYPE)  # type: ignore[arg-type]
    return kv_layout(get_model(SMOLLM2_ID), cfg).bytes_per_block


def unmapped_capacity(labels: dict[str, str]) -> int:
    """The real server's usable pool when its model is not mapped to the registry: the
    reported bytes less one block's share (the null block)."""
    reported, blocks = int(labels["kv_cache_memory_bytes"]), int(labels["num_gpu_blocks"])
    return reported - reported // blocks


# --- probe ----------------------------------------------------------------------------------


def test_probe_reads_the_real_server(smollm2_server: VllmServer) -> None:
    state = probe(smollm2_server.url + "/", timeout=5)
    labels = real_cache_config(smollm2_server)
    assert state.error is None and state.metrics_error is None
    assert state.url == smollm2_server.url
    assert state.model == SMOLLM2
    assert state.max_model_len == MAX_MODEL_LEN == 2048
    assert state.block_size == 128
    assert state.num_blocks == int(labels["num_gpu_blocks"]) > 0
    assert state.kv_cache_bytes == int(labels["kv_cache_memory_bytes"]) == GIB
    assert state.kv_cache_tokens == int(labels["kv_cache_size_tokens"])
    assert state.kv_cache_tokens == state.num_blocks * 128  # SmolLM2: all full attention
    assert state.kv_usage == 0.0
    assert (state.requests_running, state.requests_waiting) == (0, 0)


@pytest.mark.parametrize("mode", ["404", "garbage", "no-bytes", "huge"])
def test_probe_without_usable_metrics_has_unknown_capacity(front: MetricsFront, mode: str) -> None:
    front.mode = mode
    state = probe(front.url, timeout=5)
    assert state.error is None  # it serves: only its capacity is unknown
    assert (state.model, state.max_model_len) == (SMOLLM2, MAX_MODEL_LEN)
    assert state.kv_cache_bytes is None
    assert state.metrics_error and "/metrics" in state.metrics_error
    res = resolve(state, BackendConfig.model_validate({"role": "gemma", "url": front.url}))
    assert (res.kv_capacity_bytes, res.capacity_source) == (None, "unknown")


def test_probe_of_nothing_listening() -> None:
    state = probe(f"http://{HOST}:{free_port()}", timeout=2)
    assert state.error is not None and "ConnectError" in state.error
    assert state.model is None and state.kv_cache_bytes is None


def test_resolve_override_equal_to_measured_is_not_an_override() -> None:
    state = BackendState("http://x", "m", 2048, kv_cache_bytes=GIB)
    cfg = BackendConfig.model_validate(
        {"role": "gemma", "url": "http://x", "kv_cache_bytes": GIB, "max_model_len": 2048}
    )
    res = resolve(state, cfg)
    assert (res.kv_capacity_bytes, res.capacity_source, res.overrides) == (GIB, "measured", {})


def test_real_server_capacity_holds_back_the_null_block(smollm2_server: VllmServer) -> None:
    state = probe(smollm2_server.url, timeout=5)
    blocks, per_block = (
        int(real_cache_config(smollm2_server)["num_gpu_blocks"]),
        smollm2_bytes_per_block(),
    )
    assert state.kv_cache_bytes == GIB  # as reported, for display
    assert blocks * per_block <= GIB < (blocks + 1) * per_block  # the blocks, not the bytes
    mapped = BackendConfig.model_validate(
        {"role": "scout", "url": smollm2_server.url, "model": SMOLLM2_ID}
    )
    res = resolve(state, mapped)
    assert (res.kv_capacity_bytes, res.capacity_source) == ((blocks - 1) * per_block, "measured")
    # cache_dtype "auto" whatever --dtype is; the blocks tell which.
    assert (state.cache_dtype, res.kv_dtype) == ("auto", SERVED_KV_DTYPE)
    # Served name not in the registry and no `model`: the bytes less one block's share.
    plain = BackendConfig.model_validate({"role": "scout", "url": smollm2_server.url})
    res = resolve(state, plain)
    assert (res.kv_capacity_bytes, res.capacity_source) == (GIB - GIB // blocks, "measured")
    assert res.kv_dtype is None


def test_gpu_metrics_without_bytes_derive_capacity(front: MetricsFront) -> None:
    front.mode = "no-bytes"  # vLLM on a GPU without --kv-cache-memory-bytes
    blocks = int(parse_cache_config((front.metrics() or b"").decode())["num_gpu_blocks"])
    want = (blocks - 1) * smollm2_bytes_per_block()
    # Without bytes an "auto" pool cannot show its dtype: configured (default bf16).
    dtype = {"kv_dtype": SERVED_KV_DTYPE}
    plain = BackendConfig.model_validate({"role": "scout", "url": front.url, **dtype})
    front.served_as = SMOLLM2_ID  # served under its HF id, as production servers are
    try:
        state = probe(front.url, timeout=5)
        assert (state.model, state.kv_cache_bytes, state.num_blocks) == (SMOLLM2_ID, None, blocks)
        res = resolve(state, plain)
        assert (res.kv_capacity_bytes, res.capacity_source, res.overrides) == (want, "derived", {})
        # A configured figure still wins; the server measured nothing.
        cfg = BackendConfig.model_validate(
            {"role": "scout", "url": front.url, "kv_cache_bytes": GIB}
        )
        res = resolve(state, cfg)
        assert (res.kv_capacity_bytes, res.capacity_source) == (GIB, "configured")
        assert res.overrides == {"kv_cache_bytes": {"configured": GIB, "measured": None}}

        front.served_as = "someone/not-in-the-registry"
        res = resolve(probe(front.url, timeout=5), plain)
        assert (res.kv_capacity_bytes, res.capacity_source) == (None, "unknown")
    finally:
        front.served_as = None
    # Served under another name: the configured registry id maps it.
    mapped = BackendConfig.model_validate(
        {"role": "scout", "url": front.url, "model": SMOLLM2_ID, **dtype}
    )
    res = resolve(probe(front.url, timeout=5), mapped)
    assert (res.kv_capacity_bytes, res.capacity_source) == (want, "derived")


@pytest.mark.parametrize("cache_dtype", ["fp8", "fp8_e4m3", "auto"])
def test_resolve_derives_from_the_registry_layout(cache_dtype: str) -> None:
    model = "google/gemma-4-31B-it"
    state = BackendState(
        "http://x", model, 65536, block_size=16, num_blocks=1000, cache_dtype=cache_dtype
    )
    cfg = BackendConfig.model_validate({"role": "gemma", "url": "http://x", "tp": 2})
    dtype = "bf16" if cache_dtype == "auto" else "fp8"
    per_block = kv_layout(
        get_model(model), KvConfig(block_size=16, tp=2, kv_dtype=dtype)
    ).bytes_per_block
    res = resolve(state, cfg)
    assert (res.kv_capacity_bytes, res.capacity_source) == (999 * per_block, "derived")


def test_backend_config_model_must_be_registered() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        BackendConfig.model_validate({"role": "scout", "url": "http://x", "model": "nope/nope"})


# --- refresh on Postgres --------------------------------------------------------------------


def test_refresh_upserts_rows_and_keeps_unconfigured_ones(
    sessions: sessionmaker[Session], smollm2_server: VllmServer, forwarder: Forwarder
) -> None:
    replicas = settings(
        {"role": "gemma", "url": smollm2_server.url},
        {"role": "gemma", "url": forwarder.url + "/"},
    )
    labels = real_cache_config(smollm2_server)
    with sessions() as session:
        t1 = utcnow()
        refresh(session, replicas, t1)
        first = {u: row(session, u).id for u in (smollm2_server.url, forwarder.url)}
        t2 = t1 + timedelta(seconds=1)
        refresh(session, replicas, t2)
        for url, row_id in first.items():
            r = row(session, url)
            assert r.id == row_id  # updated in place, not a second row
            assert (r.role, r.model, r.max_model_len) == ("gemma", SMOLLM2, MAX_MODEL_LEN)
            assert (r.block_size, r.num_blocks) == (128, int(labels["num_gpu_blocks"]))
            assert r.kv_capacity_bytes == unmapped_capacity(labels) < GIB
            assert r.kv_capacity_tokens == int(labels["kv_cache_size_tokens"])
            assert (r.healthy, r.last_error, r.overrides) == (True, None, None)
            assert r.last_seen_at == t2 and capacity_source(r) == "measured"
        count = session.scalars(select(Backend).where(Backend.url.in_(list(first)))).all()
        assert len(count) == 2

        refresh(session, settings({"role": "gemma", "url": smollm2_server.url}), t2)
        dropped = row(session, forwarder.url)
        assert dropped.id == first[forwarder.url]
        assert (dropped.healthy, dropped.last_error) == (False, NOT_CONFIGURED)
        assert dropped.kv_capacity_bytes == unmapped_capacity(
            labels
        )  # what it was, kept for the record
        assert row(session, smollm2_server.url).healthy


def test_dead_backend_goes_down_and_comes_back(
    sessions: sessionmaker[Session],
    forwarder: Forwarder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    one = settings({"role": "scout", "url": forwarder.url})
    with sessions() as session:
        t1 = utcnow()
        refresh(session, one, t1)
        assert row(session, forwarder.url).healthy

        forwarder.stop()
        refresh(session, one, t1 + timedelta(seconds=1))
        down = row(session, forwarder.url)
        assert down.healthy is False
        assert down.last_error and "ConnectError" in down.last_error
        assert down.last_seen_at == t1  # the last time it answered
        assert down.role == "scout" and down.kv_capacity_bytes is not None
        (out,) = [b for b in describe(session, utcnow()) if b.url == forwarder.url]
        assert (out.healthy, out.usable) == (False, False)
        assert any(f"backend {forwarder.url} is down" in m for m in caplog.messages)

        forwarder.start()
        t3 = t1 + timedelta(seconds=2)
        refresh(session, one, t3)
        up = row(session, forwarder.url)
        assert (up.healthy, up.last_error, up.last_seen_at) == (True, None, t3)
        assert any(f"backend {forwarder.url} is up" in m for m in caplog.messages)


def test_broken_metrics_unknown_then_configured(
    sessions: sessionmaker[Session], front: MetricsFront
) -> None:
    front.mode = "garbage"
    with sessions() as session:
        refresh(session, settings({"role": "gemma", "url": front.url}), utcnow())
        r = row(session, front.url)
        assert r.healthy and r.model == SMOLLM2 and r.max_model_len == MAX_MODEL_LEN
        assert r.kv_capacity_bytes is None and capacity_source(r) == "unknown"
        assert r.last_error and "cache_config_info" in r.last_error
        (out,) = [b for b in describe(session, utcnow()) if b.url == front.url]
        assert (out.usable, out.free_bytes, out.capacity_source) == (False, None, "unknown")

        front.mode = "404"
        override = {"role": "gemma", "url": front.url, "kv_cache_bytes": 2 * GIB}
        refresh(session, settings(override), utcnow())
        r = row(session, front.url)
        assert r.kv_capacity_bytes == 2 * GIB and capacity_source(r) == "configured"
        assert r.overrides == {"kv_cache_bytes": {"configured": 2 * GIB, "measured": None}}
        assert r.last_error and "404" in r.last_error  # still shown: it is not measured
        (out,) = [b for b in describe(session, utcnow()) if b.url == front.url]
        assert (out.usable, out.free_bytes, out.capacity_source) == (True, 2 * GIB, "configured")


def test_refresh_records_derived_capacity(
    sessions: sessionmaker[Session], front: MetricsFront, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    front.mode = "no-bytes"
    blocks = int(parse_cache_config((front.metrics() or b"").decode())["num_gpu_blocks"])
    cfg: dict[str, object] = {
        "role": "scout",
        "url": front.url,
        "model": SMOLLM2_ID,
        "kv_dtype": SERVED_KV_DTYPE,
    }
    with sessions() as session:
        try:
            refresh(session, settings(cfg), utcnow())
            r = row(session, front.url)
            assert r.kv_capacity_bytes == (blocks - 1) * smollm2_bytes_per_block()
            assert r.kv_dtype == SERVED_KV_DTYPE
            assert capacity_source(r) == "derived" and r.capacity_source == "derived"
            assert (r.healthy, r.last_error, r.overrides, r.num_blocks) == (
                True,
                None,
                None,
                blocks,
            )
            assert any("derived" in m for m in caplog.messages)
            assert not any("not measured" in m for m in caplog.messages)
            (out,) = [b for b in describe(session, utcnow()) if b.url == front.url]
            assert (out.capacity_source, out.usable) == ("derived", True)
            assert out.kv_capacity_bytes == r.kv_capacity_bytes
            assert out.kv_dtype == SERVED_KV_DTYPE
        finally:
            session.rollback()
            session.execute(delete(Backend).where(Backend.url == front.url))
            session.commit()


def test_override_differing_from_measured_is_applied_and_logged(
    sessions: sessionmaker[Session],
    smollm2_server: VllmServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = smollm2_server.url
    cfg = {"role": "gemma", "url": url, "kv_cache_bytes": 512 * MIB, "max_model_len": 1024}
    measured = unmapped_capacity(real_cache_config(smollm2_server))
    with sessions() as session:
        refresh(session, settings(cfg), utcnow())
        r = row(session, url)
        assert (r.kv_capacity_bytes, r.max_model_len) == (512 * MIB, 1024)
        assert r.num_blocks == int(real_cache_config(smollm2_server)["num_gpu_blocks"])
        assert capacity_source(r) == "configured"
        assert r.overrides == {
            "kv_cache_bytes": {"configured": 512 * MIB, "measured": measured},
            "max_model_len": {"configured": 1024, "measured": MAX_MODEL_LEN},
        }
        warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
        assert (
            f"backend {url}: configured kv_cache_bytes={512 * MIB} overrides the measured "
            f"{measured}" in warnings
        )
        assert (
            f"backend {url}: configured max_model_len=1024 overrides the measured 2048" in warnings
        )

        caplog.clear()  # the same override again: shown in the row, not logged each interval
        refresh(session, settings(cfg), utcnow())
        assert not [rec for rec in caplog.records if "overrides" in rec.getMessage()]

        refresh(session, settings({"role": "gemma", "url": url}), utcnow())
        r = row(session, url)
        assert (r.kv_capacity_bytes, r.max_model_len) == (measured, MAX_MODEL_LEN)
        assert r.overrides is None
        assert any("no longer overridden" in m for m in caplog.messages)


def test_a_longer_configured_context_than_the_server_has_is_a_mismatch(
    sessions: sessionmaker[Session], smollm2_server: VllmServer
) -> None:
    # Restricting the server is an override (above); asking more than it serves would
    # send prompts it rejects: up, not healthy, its own context kept, routed around.
    url = smollm2_server.url
    longer = {"role": "gemma", "url": url, "max_model_len": 2 * MAX_MODEL_LEN}
    with sessions() as session:
        refresh(session, settings(longer), utcnow())
        r = row(session, url)
        assert (r.healthy, r.max_model_len, r.overrides) == (False, MAX_MODEL_LEN, None)
        assert r.mismatches == {
            "max_model_len": {"expected": 2 * MAX_MODEL_LEN, "reported": MAX_MODEL_LEN}
        }
        assert r.last_error == "context too short: serves max_model_len 2,048, configured 4,096"
        (out,) = [b for b in describe(session, utcnow()) if b.url == url]
        assert (out.reachable, out.healthy, out.usable) == (True, False, False)

        refresh(session, settings({"role": "gemma", "url": url}), utcnow())
        r = row(session, url)
        assert (r.healthy, r.mismatches, r.last_error) == (True, None, None)


# --- what readers see -----------------------------------------------------------------------


def _lease(session: Session, backend_id: uuid.UUID, kv_bytes: int, expires_in: float) -> None:
    tenant = Tenant(name=f"backends-test-{uuid.uuid4().hex[:8]}")
    session.add(tenant)
    session.flush()
    doc = Document(
        tenant_id=tenant.id, sha256="0" * 64, filename="x.txt", media_type="text/plain",
        size_bytes=1,
    )  # fmt: skip
    session.add(doc)
    session.flush()
    job = Job(
        tenant_id=tenant.id, document_id=doc.id, task="summarize", max_output_tokens=16,
        idempotency_key=uuid.uuid4().hex, backend_id=backend_id,
    )  # fmt: skip
    session.add(job)
    session.flush()
    session.add(
        KvLease(
            job_id=job.id,
            backend_id=backend_id,
            kv_bytes=kv_bytes,
            kv_blocks=kv_bytes // (1 << 20),
            expires_at=utcnow() + timedelta(seconds=expires_in),
        )
    )
    session.commit()


def _app() -> FastAPI:
    # The real app: its error handlers turn the core's domain errors into responses.
    from service.api.main import app

    return app


def test_get_v1_backends(
    sessions: sessionmaker[Session],
    smollm2_server: VllmServer,
    front: MetricsFront,
    api_key: str,
    admin_key: str,
) -> None:
    front.mode = "garbage"
    both = settings(
        {"role": "gemma", "url": smollm2_server.url}, {"role": "scout", "url": front.url}
    )
    with sessions() as session:
        refresh(session, both, utcnow())
        backend_id = row(session, smollm2_server.url).id
        _lease(session, backend_id, 100 * MIB, expires_in=600)
        _lease(session, backend_id, 200 * MIB, expires_in=-1)  # expired: holds nothing
    labels = real_cache_config(smollm2_server)
    with TestClient(_app()) as http:
        assert http.get("/v1/backends").status_code == 401
        tenant = http.get("/v1/backends", headers=auth(api_key))
        resp = http.get("/v1/backends", headers=auth(admin_key))
    # A tenant: which models are up, nothing of where, what failed, or who holds what.
    assert tenant.status_code == 200 and tenant.json()["view"] == "tenant", tenant.text
    (seen,) = [b for b in tenant.json()["items"] if b["id"] == str(backend_id)]
    assert seen == {
        "id": str(backend_id),
        "role": "gemma",
        "model": SMOLLM2,
        "max_model_len": MAX_MODEL_LEN,
        "healthy": True,
        "usable": True,
    }
    assert smollm2_server.url not in tenant.text and front.url not in tenant.text
    assert resp.status_code == 200 and resp.json()["view"] == "admin", resp.text
    items = {b["url"]: b for b in resp.json()["items"]}
    live = items[smollm2_server.url]
    assert live["role"] == "gemma" and live["model"] == SMOLLM2
    assert live["max_model_len"] == MAX_MODEL_LEN and live["block_size"] == 128
    # Served under a name the registry does not know, with no `model` configured: its
    # "auto" KV dtype cannot be told, and the view says so rather than guess.
    assert live["kv_dtype"] is None
    cap = unmapped_capacity(labels)
    assert live["kv_capacity_bytes"] == cap
    assert live["kv_capacity_blocks"] == int(labels["num_gpu_blocks"])
    assert live["kv_capacity_tokens"] == int(labels["kv_cache_size_tokens"])
    assert (live["leased_bytes"], live["free_bytes"]) == (100 * MIB, cap - 100 * MIB)
    assert (live["healthy"], live["usable"], live["capacity_source"]) == (True, True, "measured")
    assert live["last_error"] is None and live["overrides"] == {}
    assert live["last_seen_at"] and live["checked_at"]
    broken = items[front.url]
    assert (broken["kv_capacity_bytes"], broken["free_bytes"]) == (None, None)
    assert (broken["capacity_source"], broken["usable"]) == ("unknown", False)


def test_cli_backends_probes_and_prints(
    sessions: sessionmaker[Session], smollm2_server: VllmServer
) -> None:
    cli = typer.Typer()
    cli.command()(backends_command)
    config = [{"role": "gemma", "url": smollm2_server.url}]
    _USED.add(smollm2_server.url)
    # The command's own environment, as a shell would give it; nothing else sees it.
    env = {"LONGDOC_BACKENDS": json.dumps(config)}
    as_json = CliRunner().invoke(cli, ["--json"], env=env)
    table = CliRunner().invoke(cli, [], env=env)
    assert as_json.exit_code == 0, as_json.output
    (item,) = [b for b in json.loads(as_json.stdout)["items"] if b["url"] == smollm2_server.url]
    cap = unmapped_capacity(real_cache_config(smollm2_server))
    assert (item["model"], item["kv_capacity_bytes"], item["healthy"]) == (SMOLLM2, cap, True)
    assert item["kv_dtype"] is None  # not told: see test_get_v1_backends
    assert table.exit_code == 0, table.output
    line = next(x for x in table.stdout.splitlines() if smollm2_server.url in x)
    # 1.00G for the bf16 server's 364 blocks, 0.99G for the fp32 one's 182.
    assert f"{cap / GIB:.2f}G (measured)" in line and "2,048" in line and line.endswith("up")
    assert _kv_column(line) == "?"


def _kv_column(line: str) -> str:
    # The column after the capacity's "(source)".
    cells = line.split()
    return cells[next(i for i, c in enumerate(cells) if c.startswith("(")) + 1]


def test_cli_backends_shows_each_rows_kv_dtype(tmp_path: Path) -> None:
    # Fast tier: rows on an embedded database as discovery left them, none configured
    # now, so the command's own refresh marks them down and keeps what they measured.
    url = f"sqlite:///{tmp_path / 'longdoc.db'}"
    upgrade(url)
    engine = make_engine(url)
    known, unknown = "http://10.0.0.1:8000", "http://10.0.0.2:8000"
    with Session(engine) as session:
        session.add_all(
            [
                Backend(
                    role="gemma", url=known, model=SMOLLM2, kv_capacity_bytes=GIB, kv_dtype="fp32"
                ),
                Backend(role="scout", url=unknown, model=SMOLLM2, kv_dtype=None),
            ]
        )
        session.commit()
    engine.dispose()
    cli = typer.Typer()
    cli.command()(backends_command)
    env = {"LONGDOC_DATA_DIR": str(tmp_path), "LONGDOC_DATABASE_URL": url, "LONGDOC_BACKENDS": "[]"}
    as_json = CliRunner().invoke(cli, ["--json"], env=env)
    table = CliRunner().invoke(cli, [], env=env)
    assert as_json.exit_code == 0, as_json.output
    items = {b["url"]: b for b in json.loads(as_json.stdout)["items"]}
    assert {u: b["kv_dtype"] for u, b in items.items()} == {known: "fp32", unknown: None}
    assert table.exit_code == 0, table.output
    header, *lines = table.stdout.splitlines()
    assert header.split()[header.split().index("capacity") + 1] == "KV", header
    (fp32,) = [x for x in lines if known in x]
    (none,) = [x for x in lines if unknown in x]
    assert (_kv_column(fp32), _kv_column(none)) == ("fp32", "?")


def test_refresher_thread(sessions: sessionmaker[Session], smollm2_server: VllmServer) -> None:
    before = utcnow()
    job = refresher_job(sessions, settings({"role": "gemma", "url": smollm2_server.url}))
    thread = Scheduler([job], logging.getLogger(__name__)).start()
    try:

        def refreshed() -> bool:
            with sessions() as session:  # no row yet: the first round has not written it
                stmt = select(Backend).where(Backend.url == smollm2_server.url)
                r = session.scalars(stmt).one_or_none()
                seen = r.last_seen_at if r is not None and r.healthy else None
                return seen is not None and seen >= before

        wait_for(refreshed, timeout=30)
    finally:
        thread.stop()
    assert not thread.is_alive()
