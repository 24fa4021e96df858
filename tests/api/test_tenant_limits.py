"""The per-tenant queued-jobs limit at the API: 429 with Retry-After and no job row,
through the real app on Postgres; and two creations racing at the limit, forced to
meet at the tenant's row lock."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, text

from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.errors import QuotaExceeded
from service.jobs import lifecycle
from service.jobs.schemas import JobCreate
from service.keys import create_key
from service.models import Document, Job, Tenant
from tests.conftest import api_settings, auth, wait_for

LIMIT = 2


@pytest.fixture
def limited(database: str) -> Iterator[Settings]:
    """The API's settings, with a queued-jobs limit of LIMIT, for one test."""
    with api_settings(get_settings().model_copy(update={"tenant_max_queued_jobs": LIMIT})) as s:
        yield s


@pytest.fixture
def tenant(limited: Settings) -> tuple[str, uuid.UUID]:
    """A fresh tenant's key and id, under a queued-jobs limit of LIMIT."""
    name = f"limits-{uuid.uuid4().hex[:8]}"
    with get_sessionmaker()() as s:
        key = create_key(s, name)
        tenant_id = s.scalar(select(Tenant.id).where(Tenant.name == name))
    assert tenant_id is not None
    return key, tenant_id


def upload(client: Any, key: str, body: bytes, query: str = "") -> Any:
    files = {"file": ("notes.txt", body, "text/plain")}
    return client.post(f"/v1/documents{query}", headers=auth(key), files=files)


def job(client: Any, key: str, doc: str, instruction: str) -> Any:
    body = {"document_id": doc, "task": "prompt", "params": {"instruction": instruction}}
    return client.post("/v1/jobs", headers=auth(key), json=body)


def jobs_of(tenant_id: uuid.UUID) -> int:
    with get_sessionmaker()() as s:
        return s.scalar(select(func.count()).where(Job.tenant_id == tenant_id)) or 0


def test_over_the_queued_limit_is_429_with_retry_after_and_no_row(
    client: Any, tenant: tuple[str, uuid.UUID], other_key: str
) -> None:
    key, tenant_id = tenant
    resp = upload(client, key, b"some notes\n")
    assert resp.status_code == 202
    doc = resp.json()["id"]
    first, second = job(client, key, doc, "one"), job(client, key, doc, "two")
    assert (first.status_code, second.status_code) == (202, 202)

    over = job(client, key, doc, "three")
    assert over.status_code == 429
    assert over.headers["Retry-After"] == str(get_settings().tenant_retry_after_s)
    error = over.json()["error"]
    assert error["code"] == "too_many_queued_jobs" and f"limit is {LIMIT}" in error["reason"]
    assert jobs_of(tenant_id) == LIMIT

    # The same request again still gets its job; another tenant is not affected.
    again = job(client, key, doc, "one")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other_doc = upload(client, other_key, f"other {uuid.uuid4()}\n".encode()).json()["id"]
    assert job(client, other_key, other_doc, "one").status_code == 202

    # Upload and run in one call: refused before the upload is read, nothing stored.
    with get_sessionmaker()() as s:
        docs = s.scalar(select(func.count()).where(Document.tenant_id == tenant_id))
    resp = upload(client, key, b"new bytes\n", "?task=summarize")
    assert resp.status_code == 429 and "Retry-After" in resp.headers
    with get_sessionmaker()() as s:
        assert s.scalar(select(func.count()).where(Document.tenant_id == tenant_id)) == docs
    assert jobs_of(tenant_id) == LIMIT

    # A cancelled job no longer waits: there is room for one more.
    cancel = client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=auth(key))
    assert cancel.status_code == 200
    assert job(client, key, doc, "three").status_code == 202
    assert jobs_of(tenant_id) == LIMIT + 1


def test_two_creations_at_the_limit_count_each_other(
    client: Any, tenant: tuple[str, uuid.UUID], limited: Settings
) -> None:
    """One slot left, two requests: both pass the quick check, then meet at the
    tenant's row lock (held here by a third session until both wait on it)."""
    key, tenant_id = tenant
    doc = uuid.UUID(upload(client, key, f"race {uuid.uuid4()}\n".encode()).json()["id"])
    assert job(client, key, str(doc), "first").status_code == 202
    settings = limited
    sessions = get_sessionmaker()
    outcomes: list[object] = []

    def create(instruction: str) -> None:
        body = JobCreate(document_id=doc, task="prompt", params={"instruction": instruction})
        with sessions() as s:
            try:
                outcomes.append(lifecycle.create(s, settings, tenant_id, body)[1])
            except QuotaExceeded as exc:
                outcomes.append(exc.code)

    with sessions() as gate:
        gate.execute(
            select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
        )
        threads = [threading.Thread(target=create, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )

        def both_wait() -> bool:
            with sessions() as probe:  # a new transaction: pg_stat_activity is a snapshot
                return probe.scalar(waiting) == 2

        assert wait_for(both_wait, timeout=60)
        gate.commit()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes, key=str) == sorted([True, "too_many_queued_jobs"], key=str)
    assert jobs_of(tenant_id) == LIMIT
