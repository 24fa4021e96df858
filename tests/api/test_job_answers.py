"""What the job routes answer agrees with the database: a job the router refuses at
creation is answered as failed; asking again for a failed or cancelled job (no key)
creates one new job, also when two retries race; a cancel that Postgres picks as a
deadlock victim is run again, not answered with a 500."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import delete, func, select

from service.db import get_sessionmaker
from service.keys import create_key
from service.models import Backend, Document, DocumentStatus, Job, JobStatus, utcnow
from tests.conftest import auth, corpus_file, wait_for

pytestmark = pytest.mark.usefixtures("worker")
Client = Any
PDF = "pdf/latex-ltnews01.pdf"  # 1 page
WAIT_S = 60.0


@pytest.fixture(scope="module")
def key(database: str) -> str:
    with get_sessionmaker()() as s:
        return create_key(s, f"answers-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def parsed(client: Client, key: str) -> dict[str, Any]:
    with corpus_file(PDF).open("rb") as f:
        r = client.post("/v1/documents", headers=auth(key), files={"file": (PDF, f)})
    assert r.status_code == 202, r.text
    doc_id = r.json()["id"]

    def done() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/documents/{doc_id}", headers=auth(key)).json()
        return body if body["status"] in ("parsed", "failed") else None

    doc = wait_for(done, timeout=120)
    assert doc["status"] == "parsed", doc
    return doc


def refused_budget() -> int:
    """An output budget no backend in the database can run with any input (one token
    short of the largest context: the prompt alone is more); with none, any."""
    with get_sessionmaker()() as s:
        contexts = s.scalars(
            select(Backend.max_model_len).where(
                Backend.model.is_not(None), Backend.max_model_len.is_not(None)
            )
        ).all()
    return max(n for n in contexts if n is not None) - 1 if contexts else 16


def _job(client: Client, key: str, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _same_state(answer: dict[str, Any], stored: dict[str, Any]) -> None:
    assert (answer["status"], answer["error"]) == (stored["status"], stored["error"])


def _jobs_like(doc_id: str, max_out: int) -> int:
    with get_sessionmaker()() as s:
        n = s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.document_id == uuid.UUID(doc_id), Job.max_output_tokens == max_out)
        )
    return int(n or 0)


def test_a_job_refused_at_creation_is_answered_as_failed(
    client: Client, key: str, parsed: dict[str, Any]
) -> None:
    budget = refused_budget()
    body = {"document_id": parsed["id"], "task": "summarize", "max_output_tokens": budget}
    r = client.post("/v1/jobs", headers=auth(key), json=body)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "failed", job
    assert job["error"]["code"] in ("no_backend", "unsplittable"), job
    _same_state(job, _job(client, key, job["id"]))

    # The same through an upload with ?task= (the bytes are known: the same document).
    with corpus_file(PDF).open("rb") as f:
        up = client.post(
            "/v1/documents",
            headers=auth(key),
            params={"task": "summarize", "params": json.dumps({"focus": "upload"}),
                    "max_output_tokens": budget},
            files={"file": (PDF, f)},
        )  # fmt: skip
    assert up.status_code == 200, up.text
    assert up.json()["id"] == parsed["id"]
    answered = up.json()["job"]
    assert answered["status"] == "failed" and answered["error"]["code"] == job["error"]["code"]
    _same_state(answered, _job(client, key, answered["id"]))


def test_asking_again_for_a_failed_job_creates_a_new_one(
    client: Client, key: str, parsed: dict[str, Any]
) -> None:
    budget = refused_budget() - 1  # a request of its own, not the test above's
    body = {"document_id": parsed["id"], "task": "summarize", "max_output_tokens": budget}
    first = client.post("/v1/jobs", headers=auth(key), json=body).json()
    assert _job(client, key, first["id"])["status"] == "failed"
    again = client.post("/v1/jobs", headers=auth(key), json=body)
    assert again.status_code == 202, again.text
    assert again.json()["id"] != first["id"]
    assert _job(client, key, again.json()["id"])["status"] == "failed"
    assert _job(client, key, first["id"])["status"] == "failed"  # the first one stays
    assert _jobs_like(parsed["id"], budget) == 2

    # A key of the client's own names one job for good, failed or not.
    keyed = {**body, "idempotency_key": f"k-{uuid.uuid4().hex}"}
    one = client.post("/v1/jobs", headers=auth(key), json=keyed)
    two = client.post("/v1/jobs", headers=auth(key), json=keyed)
    assert (one.status_code, two.status_code) == (202, 200)
    assert one.json()["id"] == two.json()["id"]
    assert _job(client, key, one.json()["id"])["status"] == "failed"


@pytest.fixture
def queued_document(key: str, parsed: dict[str, Any]) -> Iterator[str]:
    """A document of the tenant still waiting for its parse (sent just now, so the
    sweeper leaves it be): jobs on it wait, live, until cancelled."""
    sessions = get_sessionmaker()
    with sessions() as s:
        owner = s.get(Document, uuid.UUID(parsed["id"]))
        assert owner is not None
        doc = Document(tenant_id=owner.tenant_id, sha256=uuid.uuid4().hex * 2, filename="q.pdf",
                       media_type="application/pdf", size_bytes=1,
                       status=DocumentStatus.queued, dispatched_at=utcnow())  # fmt: skip
        s.add(doc)
        s.commit()
        doc_id = doc.id
    yield str(doc_id)
    with sessions() as s:
        s.execute(delete(Document).where(Document.id == doc_id))
        s.commit()


def test_asking_again_for_a_cancelled_job_creates_a_new_one(
    client: Client, key: str, queued_document: str
) -> None:
    body = {"document_id": queued_document, "task": "summarize", "max_output_tokens": 16}
    first = client.post("/v1/jobs", headers=auth(key), json=body)
    assert (first.status_code, first.json()["status"]) == (202, "queued")
    live = client.post("/v1/jobs", headers=auth(key), json=body)
    assert (live.status_code, live.json()["id"]) == (200, first.json()["id"])  # live: reused
    cancelled = client.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=auth(key))
    assert cancelled.json()["status"] == "cancelled"
    again = client.post("/v1/jobs", headers=auth(key), json=body)
    assert again.status_code == 202 and again.json()["id"] != first.json()["id"]
    assert again.json()["status"] == "queued"
    assert _jobs_like(queued_document, 16) == 2


def _pg() -> psycopg.Connection[Any]:
    from service.config import get_settings

    url = get_settings().database_url.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url)


def _lock_waiters(conn: psycopg.Connection[Any], besides: int) -> int:
    row = conn.execute(
        "select count(*) from pg_stat_activity where datname = current_database()"
        " and wait_event_type = 'Lock' and pid <> %s",
        (besides,),
    ).fetchone()
    return int(row[0]) if row else 0


def test_two_concurrent_retries_create_one_new_job(
    client: Client, key: str, parsed: dict[str, Any]
) -> None:
    budget = refused_budget() - 2
    body = {"document_id": parsed["id"], "task": "summarize", "max_output_tokens": budget}
    failed = client.post("/v1/jobs", headers=auth(key), json=body).json()
    assert _job(client, key, failed["id"])["status"] == "failed"
    answers: list[Any] = []

    def retry() -> None:
        answers.append(client.post("/v1/jobs", headers=auth(key), json=body))

    # Both retries find the failed job; the test holds its row until both are at it.
    with _pg() as holder, _pg() as watcher:
        watcher.autocommit = True
        holder.execute("select 1 from jobs where id = %s for update", (failed["id"],))
        pid = holder.info.backend_pid
        threads = [threading.Thread(target=retry) for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: _lock_waiters(watcher, pid) == 2 or not any(t.is_alive() for t in threads),
                 timeout=WAIT_S, interval=0.05)  # fmt: skip
        holder.rollback()
        for t in threads:
            t.join(WAIT_S)
    assert sorted(a.status_code for a in answers) == [200, 202], [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1 and failed["id"] not in ids
    assert _jobs_like(parsed["id"], budget) == 2


@pytest.fixture
def tree(key: str, parsed: dict[str, Any]) -> tuple[uuid.UUID, uuid.UUID]:
    """A running map-reduce job and one waiting request of it, the job's id below the
    request's (so that a cancel that locks rows in id order takes the job first)."""
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    with get_sessionmaker()() as s:
        owner = s.get(Document, uuid.UUID(parsed["id"]))
        assert owner is not None
        # Sent just now: the sweeper sends no task for them.
        common = {"tenant_id": owner.tenant_id, "document_id": owner.id, "task": "summarize",
                  "max_output_tokens": 16, "dispatched_at": utcnow()}  # fmt: skip
        s.add(Job(id=low, idempotency_key=uuid.uuid4().hex, status=JobStatus.running, **common))
        s.flush()
        s.add(Job(id=high, parent_id=low, idempotency_key=f"{low}/map/0",
                  status=JobStatus.waiting_for_capacity, **common))  # fmt: skip
        s.commit()
    return low, high


def test_a_cancel_picked_as_deadlock_victim_is_run_again(
    client: Client, key: str, tree: tuple[uuid.UUID, uuid.UUID]
) -> None:
    parent, request = tree
    answers: list[Any] = []
    with _pg() as hostile, _pg() as watcher:
        watcher.autocommit = True
        # This session locks in the opposite order and never gives up first: the
        # cancel is the one Postgres aborts.
        hostile.execute("set deadlock_timeout = '60s'")
        hostile.execute("select 1 from jobs where id = %s for update", (request,))
        pid = hostile.info.backend_pid
        cancel = threading.Thread(
            target=lambda: answers.append(
                client.post(f"/v1/jobs/{parent}/cancel", headers=auth(key))
            )
        )
        cancel.start()
        wait_for(lambda: _lock_waiters(watcher, pid) == 1 or not cancel.is_alive(),
                 timeout=WAIT_S, interval=0.05)  # fmt: skip
        hostile.execute("select 1 from jobs where id = %s for update", (parent,))
        hostile.rollback()
        cancel.join(WAIT_S)
    assert not cancel.is_alive()
    (answer,) = answers
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert _job(client, key, str(request))["status"] == "cancelled"
