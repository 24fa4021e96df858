"""What a tenant's key sees of the backends: the role, model and health, never a
server's URL, its errors or the KV other tenants hold, in `/v1/backends`, job views,
results or failure reasons; an admin key sees it all.

The failing runs are real: a job admitted by the real ledger on a backend row whose
URL is a closed port, run by the worker's own code (`job_run.run`) in this process;
a parse whose output file cannot be written. No vLLM server is needed.
"""

from __future__ import annotations

import json
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from service import ledger
from service.blobstore import BlobStore
from service.config import get_settings
from service.db import get_sessionmaker
from service.keys import create_key
from service.models import (
    ApiKey,
    Backend,
    Document,
    DocumentStatus,
    Job,
    JobStatus,
    KvLease,
    Result,
    Tenant,
    utcnow,
)
from service.security import lookup_prefix
from tests.conftest import auth
from tests.plans import single_plan
from workers.ingest.tasks import run_ingest
from workers.jobs import run as job_run
from workers.jobs.tasks import _no_backend_for_too_long

Client = Any
GIB = 1 << 30
TEXT = "Page one of a small document.\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TenantKeys:
    id: uuid.UUID
    key: str  # the tenant's own key
    admin: str  # an admin key of the same tenant: it sees the tenant's jobs in full
    role: str  # the backend role of this test's backends and jobs


@pytest.fixture
def tenant(database: str) -> Iterator[TenantKeys]:
    name = f"views-{uuid.uuid4().hex[:8]}"
    with get_sessionmaker()() as s:
        key = create_key(s, name)
        admin = create_key(s, name, admin=True)
        row = s.query(ApiKey).filter_by(prefix=lookup_prefix(key)).one()
        made = TenantKeys(row.tenant_id, key, admin, f"r{uuid.uuid4().hex[:8]}")
    yield made
    # Nothing left for the other modules' workers to sweep up and poll for.
    with get_sessionmaker()() as s:
        s.execute(delete(Tenant).where(Tenant.id == made.id))
        s.execute(delete(Backend).where(Backend.role == made.role))
        s.commit()


@pytest.fixture
def sessions(database: str) -> Iterator[Any]:
    yield get_sessionmaker()


def _backend(s: Session, role: str, url: str, **values: Any) -> Backend:
    defaults: dict[str, Any] = {
        "model": "test-model",
        "max_model_len": 4096,
        "block_size": 16,
        "num_blocks": 1000,
        "kv_capacity_bytes": GIB,
        "healthy": True,
    }
    row = Backend(role=role, url=url, **{**defaults, **values})
    s.add(row)
    s.flush()
    return row


def _document(s: Session, tenant_id: uuid.UUID, **values: Any) -> Document:
    doc = Document(
        tenant_id=tenant_id,
        sha256=uuid.uuid4().hex * 2,
        filename="d.txt",
        media_type="text/plain",
        size_bytes=len(TEXT),
        **values,
    )
    s.add(doc)
    s.flush()
    return doc


def _job(s: Session, tenant_id: uuid.UUID, doc_id: uuid.UUID, **values: Any) -> Job:
    job = Job(
        tenant_id=tenant_id,
        document_id=doc_id,
        task="summarize",
        max_output_tokens=8,
        idempotency_key=uuid.uuid4().hex,
        **values,
    )
    s.add(job)
    s.flush()
    return job


def _leaks(body: object, *secrets: str) -> list[str]:
    text = json.dumps(body)
    return [x for x in secrets if x in text]


# --- /v1/backends ----------------------------------------------------------------------


def test_backends_tenant_view_hides_urls_errors_and_load(
    client: Client, tenant: TenantKeys, other_key: str, sessions: Any
) -> None:
    role = tenant.role
    url = f"http://10.9.{uuid.uuid4().int % 250}.7:8123"
    error = "request failed: http://10.9.0.7:8123: ConnectError: [Errno 111] refused"
    with sessions() as s:
        up = _backend(s, role, url, kv_dtype="fp32")
        down = _backend(s, role, url + "1", healthy=False, last_error=error)
        # Another tenant's running job holds 300 MiB of the first replica.
        doc = _document(s, tenant.id)
        job = _job(s, tenant.id, doc.id, status=JobStatus.running, role=role)
        s.add(
            KvLease(
                job_id=job.id,
                backend_id=up.id,
                kv_bytes=300 << 20,
                kv_blocks=10,
                expires_at=utcnow() + timedelta(minutes=10),
            )
        )
        s.commit()
        up_id, down_id = str(up.id), str(down.id)

    r = client.get("/v1/backends", headers=auth(other_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["view"] == "tenant"
    mine = {b["id"]: b for b in body["items"] if b["role"] == role}
    assert set(mine) == {up_id, down_id}
    assert mine[up_id] == {
        "id": up_id,
        "role": role,
        "model": "test-model",
        "max_model_len": 4096,
        "healthy": True,
        "usable": True,
    }
    assert (mine[down_id]["healthy"], mine[down_id]["usable"]) == (False, False)
    assert _leaks(body, url, "10.9.", "Errno", "refused", str(300 << 20)) == []

    r = client.get("/v1/backends", headers=auth(tenant.admin))
    assert r.status_code == 200, r.text
    full = {b["id"]: b for b in r.json()["items"] if b["role"] == role}
    assert r.json()["view"] == "admin"
    assert full[up_id]["url"] == url and full[up_id]["leased_bytes"] == 300 << 20
    assert full[up_id]["free_bytes"] == GIB - (300 << 20)
    assert full[down_id]["last_error"] == error
    # The KV dtype the refresher found, none where it found none; a tenant sees neither.
    assert (full[up_id]["kv_dtype"], full[down_id]["kv_dtype"]) == ("fp32", None)


# --- a run that fails on an unreachable server -------------------------------------------


def _admitted_job(sessions: Any, tenant: TenantKeys, url: str, attempts: int) -> tuple[str, str]:
    """A parsed one-page document and a job on it, admitted by the ledger on a backend
    at `url`: (job id, backend id)."""
    role = tenant.role
    store = BlobStore(get_settings().blobs)
    store.ensure()
    with sessions() as s:
        backend = _backend(s, role, url)
        doc = _document(s, tenant.id, status=DocumentStatus.parsed)
        doc.text_key = store.text_key(doc.id)
        store.path(doc.text_key).write_text(TEXT)
        n = len(TEXT.encode())
        doc.page_map = [[1, 0, len(TEXT), 0, n]]
        job = _job(
            s,
            tenant.id,
            doc.id,
            status=JobStatus.waiting_for_capacity,
            plan=single_plan(role, 20, 8),
            role=role,
            kv_bytes=1 << 20,
            kv_blocks=1,
            attempts=attempts,
            waiting_since=utcnow(),
            heartbeat_at=utcnow(),
        )
        s.commit()
        job_id, backend_id = job.id, backend.id
    with sessions() as s:
        now = utcnow()
        res = ledger.try_admit(s, role, now, 60, ready_after=now - timedelta(seconds=30))
        assert [a.job_id for a in res.admitted] == [job_id]
    return str(job_id), str(backend_id)


@pytest.mark.parametrize(("attempts", "status"), [(0, "waiting_for_capacity"), (2, "failed")])
def test_an_unreachable_server_is_named_by_id_not_url(
    client: Client, tenant: TenantKeys, sessions: Any, attempts: int, status: str
) -> None:
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    job_id, backend_id = _admitted_job(sessions, tenant, url, attempts)
    settings = get_settings().model_copy(update={"vllm_max_retries": 0, "vllm_backoff_s": 0.0})
    job_run.run(sessions, settings, uuid.UUID(job_id), lambda ids: None)

    seen = client.get(f"/v1/jobs/{job_id}", headers=auth(tenant.key)).json()
    assert seen["status"] == status and seen["error"]["code"] == "backend_unreachable", seen
    reason = seen["error"]["reason"]
    assert backend_id in reason and "could not be reached" in reason, reason
    assert _leaks(seen, url, str(port), "127.0.0.1", "Errno", "Connect") == [], seen
    assert seen["backend"] == {
        "id": backend_id,
        "role": seen["backend"]["role"],
        "url": None,
        "model": "test-model",
    }
    listed = client.get("/v1/jobs", headers=auth(tenant.key)).json()["items"]
    assert _leaks(listed, url, str(port)) == []
    if status == "failed":
        r = client.get(f"/v1/jobs/{job_id}/result", headers=auth(tenant.key))
        assert r.status_code == 409 and _leaks(r.json(), url, str(port)) == [], r.text

    # The operator sees where it ran, and what the server did, on its backend row.
    full = client.get(f"/v1/jobs/{job_id}", headers=auth(tenant.admin)).json()
    assert full["backend"]["url"] == url
    rows = client.get("/v1/backends", headers=auth(tenant.admin)).json()["items"]
    (row,) = [b for b in rows if b["id"] == backend_id]
    assert row["healthy"] is False and "Connect" in row["last_error"], row


def test_no_backend_up_names_replicas_by_id(
    client: Client, tenant: TenantKeys, sessions: Any
) -> None:
    role = tenant.role
    url = f"http://127.0.0.1:{_closed_port()}"
    error = f"{url}: ConnectError: [Errno 111] Connection refused"
    settings = get_settings()
    with sessions() as s:
        backend = _backend(s, role, url, healthy=False, last_error=error)
        doc = _document(s, tenant.id, status=DocumentStatus.parsed)
        long_ago = utcnow() - timedelta(seconds=settings.backend_down_timeout_s + 60)
        job = _job(
            s,
            tenant.id,
            doc.id,
            status=JobStatus.waiting_for_capacity,
            role=role,
            kv_bytes=1 << 20,
            kv_blocks=1,
            waiting_since=long_ago,
        )
        s.commit()
        job_id, backend_id = job.id, str(backend.id)
    with sessions() as s:
        assert _no_backend_for_too_long(s, job_id, role, settings)
    seen = client.get(f"/v1/jobs/{job_id}", headers=auth(tenant.key)).json()
    assert seen["status"] == "failed" and seen["error"]["code"] == "backend_down", seen
    assert backend_id in seen["error"]["reason"], seen
    assert _leaks(seen, url, "Errno", "refused") == [], seen


def test_a_result_shows_its_backend_url_to_admins_only(
    client: Client, tenant: TenantKeys, sessions: Any
) -> None:
    url = f"http://10.0.{uuid.uuid4().int % 250}.1:9000"
    with sessions() as s:
        doc = _document(s, tenant.id, status=DocumentStatus.parsed)
        job = _job(s, tenant.id, doc.id, status=JobStatus.succeeded)
        s.add(Result(job_id=job.id, text="done", model="test-model", backend_url=url))
        s.commit()
        job_id = job.id
    mine = client.get(f"/v1/jobs/{job_id}/result", headers=auth(tenant.key))
    assert mine.status_code == 200, mine.text
    assert mine.json()["backend_url"] is None and mine.json()["model"] == "test-model"
    assert _leaks(mine.json(), url) == []
    full = client.get(f"/v1/jobs/{job_id}/result", headers=auth(tenant.admin))
    assert full.json()["backend_url"] == url


# --- a parse that fails inside the worker -------------------------------------------------


def test_internal_error_reason_has_no_exception_text(
    client: Client, tenant: TenantKeys, sessions: Any
) -> None:
    store = BlobStore(get_settings().blobs)
    store.ensure()
    with sessions() as s:
        doc = _document(s, tenant.id)
        s.commit()
        doc_id, sha = doc.id, doc.sha256
    original = store.original(sha)
    original.parent.mkdir(parents=True, exist_ok=True)
    original.write_text(TEXT)
    # Where the parsed text goes: a directory that is not empty, so putting the text in
    # place fails with an OSError naming a server path, as a broken disk would.
    final = store.path(store.text_key(doc_id))
    final.mkdir(parents=True)
    (final / "in-the-way").touch()
    try:
        out = run_ingest(doc_id, "test-worker", get_settings())
    finally:
        shutil.rmtree(final)
    assert out["status"] == "failed"
    seen = client.get(f"/v1/documents/{doc_id}", headers=auth(tenant.key)).json()
    assert seen["status"] == "failed" and seen["error"]["code"] == "internal_error", seen
    assert seen["error"]["reason"], seen
    leaked = _leaks(seen, str(store.root), "Errno", "Error:", "directory")
    assert leaked == [], seen
