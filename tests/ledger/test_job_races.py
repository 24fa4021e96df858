"""Races of the `run_job` task on Postgres, each forced with a gate: two tasks planning
one job (the sweeper sends a queued job again), and an admission that lands after the
task's last poll, just before it gives its slot back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from service import ledger
from service.blobstore import BlobStore
from service.config import BackendConfig, Settings, get_settings
from service.db import get_sessionmaker
from service.models import (
    Backend,
    Document,
    DocumentStatus,
    DocumentTokenCount,
    Job,
    JobStatus,
    KvLease,
    Tenant,
    utcnow,
)
from tests.ledger.gates import Gate, Monitor, Runner
from tests.plans import single_plan
from workers.jobs import tasks as jobs

GEMMA = "google/gemma-3-270m"


@pytest.fixture
def monitor(pg_url: str) -> Iterator[Monitor]:
    m = Monitor(pg_url)
    yield m
    m.close()


def _lease(s: Session, job_id: uuid.UUID) -> uuid.UUID | None:
    return s.scalar(select(KvLease.id).where(KvLease.job_id == job_id))


def _tenant_and_document(s: Session, **doc: Any) -> Document:
    tenant = Tenant(name=f"races-{uuid.uuid4().hex[:8]}")
    s.add(tenant)
    s.flush()
    document = Document(
        tenant_id=tenant.id,
        sha256=uuid.uuid4().hex * 2,
        filename="d.pdf",
        media_type="application/pdf",
        size_bytes=1,
        **doc,
    )
    s.add(document)
    s.flush()
    return document


@pytest.fixture
def planned_on_gemma(
    pg_sessions: sessionmaker[Session],
) -> Iterator[tuple[uuid.UUID, str, Settings]]:
    """A queued job on a parsed, counted document, a gemma replica that fits it, and
    settings that configure that replica (a plan uses configured backends only)."""
    with pg_sessions() as s:
        backend = Backend(
            role="gemma",
            url=f"http://{uuid.uuid4().hex}:8000",
            model=GEMMA,
            max_model_len=2048,
            block_size=16,
            kv_capacity_bytes=1 << 30,
            healthy=True,
        )
        doc = _tenant_and_document(s, status=DocumentStatus.parsed, page_count=1)
        s.add(backend)
        s.add(DocumentTokenCount(document_id=doc.id, role="gemma", count=100, exact=True,
                                 tokenizer="gemma", method="tokenizer"))  # fmt: skip
        job = Job(tenant_id=doc.tenant_id, document_id=doc.id, task="summarize",
                  max_output_tokens=16, idempotency_key=uuid.uuid4().hex)  # fmt: skip
        s.add(job)
        s.commit()
        job_id, backend_id = job.id, backend.id
        configured = [BackendConfig(role="gemma", url=backend.url)]
    yield job_id, "gemma", get_settings().model_copy(update={"backends": configured})
    with pg_sessions() as s:  # the replica, with its leases: no other test plans on it
        s.execute(delete(Backend).where(Backend.id == backend_id))
        s.commit()


def test_the_slower_of_two_planners_leaves_an_admitted_job_alone(
    pg_sessions: sessionmaker[Session], planned_on_gemma: tuple[uuid.UUID, str, Settings]
) -> None:
    job_id, role, settings = planned_on_gemma

    def plan(s: Session) -> Any:
        job = s.get(Job, job_id)
        assert job is not None and job.status == JobStatus.queued
        return jobs._prepare(s, settings, job)

    with pg_sessions() as slow:
        # The slow task has read the queued job and planned it; it stops just before
        # its first write (or lock) on the job.
        gate = Gate(slow, before=True)
        slower = Runner(lambda: plan(slow))
        slower.start()
        assert gate.paused.wait(60), f"the planner never wrote: {slower.error!r}"
        with pg_sessions() as fast:
            assert plan(fast) is None  # planned: go on and wait for KV
        with pg_sessions() as s:
            first_plan = s.get(Job, job_id).plan  # type: ignore[union-attr]
            admitted = ledger.try_admit(s, role, utcnow(), 60.0).admitted
        assert [a.job_id for a in admitted] == [job_id]
        gate.open()
        assert slower.outcome() is None

    with pg_sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempts, job.plan) == (JobStatus.running, 1, first_plan)
        assert _lease(s, job_id) == admitted[0].lease_id


# -- requeue: on the main test database, which the task reads through get_sessionmaker --


@pytest.fixture
def waiting_job(database: str, broker: object) -> Iterator[tuple[uuid.UUID, uuid.UUID, str]]:
    """A job waiting on a role whose one replica is down, with its text stored."""
    settings = get_settings()
    sessions = get_sessionmaker()
    role = f"r{uuid.uuid4().hex[:10]}"
    with sessions() as s:
        doc = _tenant_and_document(s, status=DocumentStatus.parsed, page_map=[])
        store = BlobStore(settings.blobs)
        doc.text_key = store.text_key(doc.id)
        path = store.path(doc.text_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        # Port 9 (discard): nothing listens, so a request there fails at once.
        backend = Backend(role=role, url=f"http://127.0.0.1:9/{role}", model="m",
                          kv_capacity_bytes=100, healthy=False)  # fmt: skip
        s.add(backend)
        job = Job(tenant_id=doc.tenant_id, document_id=doc.id, task="summarize",
                  max_output_tokens=4, idempotency_key=uuid.uuid4().hex,
                  status=JobStatus.waiting_for_capacity, role=role, kv_bytes=10, kv_blocks=1,
                  plan=single_plan(role, 10, 4, kv_bytes=10, model="m"),
                  waiting_since=utcnow())  # fmt: skip
        s.add(job)
        s.commit()
        job_id, backend_id, doc_id = job.id, backend.id, doc.id
    yield job_id, backend_id, role
    with sessions() as s:  # a role no one else knows must not outlive the test
        s.execute(delete(Backend).where(Backend.id == backend_id))
        s.execute(delete(Document).where(Document.id == doc_id))
        s.commit()


def test_an_admission_after_the_last_poll_is_run_not_dropped(
    waiting_job: tuple[uuid.UUID, uuid.UUID, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id, backend_id, role = waiting_job
    sessions = get_sessionmaker()
    settings = get_settings().model_copy(
        update={"admission_wait_s": 0.01, "vllm_max_retries": 0, "vllm_connect_timeout_s": 2.0}
    )
    requeue, admitted = jobs._requeue, []

    def replica_up_then_requeue(job: uuid.UUID, worker: str) -> Any:
        # Between the task's last poll and its giving up: the replica comes up and
        # another task's admission round places this job.
        if not admitted:
            with sessions() as s:
                s.get(Backend, backend_id).healthy = True  # type: ignore[union-attr]
                s.commit()
                now = utcnow()
                ready = now - timedelta(seconds=settings.stale_after_s)
                res = ledger.try_admit(s, role, now, 60.0, ready_after=ready)
            admitted.extend(a.job_id for a in res.admitted)
        return requeue(job, worker)

    monkeypatch.setattr(jobs, "_requeue", replica_up_then_requeue)
    out = jobs.drive(job_id, "test-worker:1", settings)
    assert admitted == [job_id]
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        # The task ran what it was admitted for (the server was unreachable, so the
        # job waits again with its lease given back), then gave its slot back.
        assert job.started_at is not None and job.attempts == 1
        assert (job.status, _lease(s, job_id)) == (JobStatus.waiting_for_capacity, None)
    assert out == {"status": "waiting_for_capacity", "requeued": True}
