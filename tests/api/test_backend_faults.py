"""A backend that fails, as a hostile peer (tests/hostile.py) on a real socket, against
the real API, ledger and worker code on Postgres, with no vLLM:

- one request failing (429, 500, a stream cut) leaves the replica up for every other
  job; only a refused connection marks it down (B10);
- a /tokenize that fails is tried a bounded number of times: the API leaves the job
  queued, the worker then fails it with `tokenize_failed` (B7);
- a budget that cannot finish within the job time limit is a 422 naming the limit (B6).

The backend's row is written here as the refresher would write it for a server of
Gemma 3 270M (no refresher runs in this process); the document is really parsed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.models import Backend, Job, JobStatus, KvLease, utcnow
from tests.api.test_documents import upload
from tests.conftest import api_settings, auth
from tests.hostile import ChatFault, HostilePeer

GEMMA = "google/gemma-3-270m"
_POOL = 200 * 2**20


@contextmanager
def _hostile_gemma(
    chat: ChatFault = "500", **overrides: Any
) -> Iterator[tuple[HostilePeer, uuid.UUID, Settings]]:
    """The only gemma replica is the hostile peer; returns it, its row's id, and the
    settings that point at it (the API's for the block; the test hands them on)."""
    with HostilePeer(chat) as peer:
        settings = Settings(
            backends=[{"role": "gemma", "url": peer.url}],
            vllm_max_retries=1,
            vllm_backoff_s=0.05,
            tokenize_backoff_s=0.05,
            **overrides,
        )
        with api_settings(settings), get_sessionmaker()() as s:
            # Replicas other modules left behind must not take these jobs.
            s.execute(update(Backend).where(Backend.role == "gemma").values(healthy=False))
            row = Backend(
                role="gemma",
                url=peer.url,
                model=GEMMA,
                max_model_len=2048,
                block_size=128,
                num_blocks=_POOL // (128 * 18 * 1024) + 1,
                kv_capacity_bytes=_POOL,
                capacity_source="measured",
                healthy=True,
                last_seen_at=utcnow(),
            )
            s.add(row)
            s.commit()
            try:
                yield peer, row.id, settings
            finally:
                s.execute(update(Backend).where(Backend.id == row.id).values(healthy=False))
                s.commit()


def _parsed_doc(client: Any, key: str, tmp_path: Path, settings: Settings) -> str:
    from workers.ingest.tasks import run_ingest

    text = tmp_path / "note.txt"
    text.write_text(f"A short note ({uuid.uuid4()}) about backends that fail.\n" * 20)
    doc_id: str = upload(client, key, text).json()["id"]
    # Parsed here, in this process, with these settings (no worker runs in this module).
    run_ingest(uuid.UUID(doc_id), "test:ingest", settings)
    assert client.get(f"/v1/documents/{doc_id}", headers=auth(key)).json()["status"] == "parsed"
    return doc_id


def _job(client: Any, key: str, doc: str, max_out: int) -> dict[str, Any]:
    r = client.post(
        "/v1/jobs",
        headers=auth(key),
        json={"document_id": doc, "task": "summarize", "max_output_tokens": max_out},
    )
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def _admit(settings: Settings) -> None:
    from service import ledger

    with get_sessionmaker()() as s:
        ledger.try_admit(
            s, "gemma", utcnow(), settings.lease_ttl_s, max_attempts=settings.max_job_attempts
        )


def _run(job_id: str, settings: Settings) -> None:
    from workers.jobs import run as job_run

    job_run.run(get_sessionmaker(), settings, uuid.UUID(job_id), lambda ids: None)


def _state(job_id: str) -> tuple[JobStatus, str | None, int]:
    with get_sessionmaker()() as s:
        job = s.get(Job, uuid.UUID(job_id))
        assert job is not None
        return job.status, job.error_code, job.attempts


def _leased_on(backend_id: uuid.UUID) -> set[str]:
    with get_sessionmaker()() as s:
        stmt = select(KvLease.job_id).where(KvLease.backend_id == backend_id)
        return {str(j) for j in s.scalars(stmt)}


def _healthy(backend_id: uuid.UUID) -> bool:
    with get_sessionmaker()() as s:
        row = s.get(Backend, backend_id)
        assert row is not None
        return row.healthy


def _cancel(client: Any, key: str, *job_ids: str) -> None:
    for job_id in job_ids:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))


@pytest.mark.parametrize("fault", ["429", "500", "cut"])
def test_one_failed_request_leaves_the_backend_up(
    client: Any, api_key: str, tmp_path: Path, fault: ChatFault
) -> None:
    with _hostile_gemma(fault) as (peer, backend, settings):
        doc = _parsed_doc(client, api_key, tmp_path, settings)
        first = _job(client, api_key, doc, 16)
        second = _job(client, api_key, doc, 17)
        try:
            assert first["status"] == second["status"] == "waiting_for_capacity"
            _admit(settings)
            running = _leased_on(backend)
            assert first["id"] in running
            for job_id in running:
                _run(job_id, settings)
            # Retried with backoff (1 retry here), then the job waits again: its own
            # failure, not the server's.
            assert peer.hits["/v1/chat/completions"] == 2 * len(running)
            assert _state(first["id"]) == (JobStatus.waiting_for_capacity, "backend_error", 1)
            assert _healthy(backend)
            _admit(settings)  # and the replica takes work again at once
            assert _leased_on(backend)
        finally:
            _cancel(client, api_key, first["id"], second["id"])


def test_a_refused_connection_marks_the_backend_down(
    client: Any, api_key: str, tmp_path: Path
) -> None:
    with _hostile_gemma() as (peer, backend, settings):
        doc = _parsed_doc(client, api_key, tmp_path, settings)
        job = _job(client, api_key, doc, 18)
        try:
            _admit(settings)
            assert _leased_on(backend) == {job["id"]}
            peer.stop()  # the server is gone: connections are refused
            _run(job["id"], settings)
            assert _state(job["id"]) == (JobStatus.waiting_for_capacity, "backend_unreachable", 1)
            assert not _healthy(backend)
            _admit(settings)
            assert _leased_on(backend) == set()  # nothing is sent to it while it is down
        finally:
            _cancel(client, api_key, job["id"])


def test_failing_tokenize_leaves_the_job_queued_then_fails_it(
    client: Any, api_key: str, tmp_path: Path
) -> None:
    from workers.jobs.tasks import drive

    # No Gemma tokenizer file: prompts are counted by the (hostile) server's /tokenize.
    scout_only = {"scout": get_settings().tokenizers["scout"]}
    with _hostile_gemma(tokenizers=scout_only, tokenize_attempts=3) as (peer, _, settings):
        doc = _parsed_doc(client, api_key, tmp_path, settings)
        before = peer.hits["/tokenize"]
        job = _job(client, api_key, doc, 16)  # a 202, not a 500
        assert job["status"] == "queued" and job["plan"] is None and job["error"] is None
        assert peer.hits["/tokenize"] - before == 3

        # The worker plans it: the same bounded tries, then a failed job with a reason.
        drive(uuid.UUID(job["id"]), "test:worker", settings)
        done = client.get(f"/v1/jobs/{job['id']}", headers=auth(api_key)).json()
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "tokenize_failed"
        assert "/tokenize failed (HTTP 500) after 3 attempt(s)" in done["error"]["reason"]
        assert peer.hits["/tokenize"] - before == 6


def test_a_budget_that_cannot_finish_in_time_is_422(
    client: Any, api_key: str, tmp_path: Path
) -> None:
    limits = {
        "job_soft_time_limit_s": 100,
        "admission_wait_s": 10,
        "vllm_min_decode_tokens_per_s": 1,
        "vllm_min_prefill_tokens_per_s": 1000,
    }
    with _hostile_gemma(**limits) as (_, _, settings):
        doc = _parsed_doc(client, api_key, tmp_path, settings)
        r = client.post(
            "/v1/jobs",
            headers=auth(api_key),
            json={"document_id": doc, "task": "summarize", "max_output_tokens": 200},
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_budget"
        for named in (
            "LONGDOC_JOB_SOFT_TIME_LIMIT_S=100",
            "LONGDOC_VLLM_MIN_DECODE_TOKENS_PER_S=1",
            "over the job time limit of 90 s",
        ):
            assert named in error["reason"], error["reason"]
        fits = _job(client, api_key, doc, 50)  # 50 s of decode at worst: it fits
        _cancel(client, api_key, fits["id"])
