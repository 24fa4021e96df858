"""Nothing lost, nothing run twice: a worker SIGKILLed mid-request, the broker
restarted mid-run, a vLLM server killed mid-request (back, or gone for good).

Real processes die here: the Celery worker's whole process group, Redis, the vLLM
server. A test that kills a server leaves a replacement running on the same port,
so the tests after it, in this module or another, find the deployment whole in any
order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service.db import get_sessionmaker
from service.models import Job, KvLease, Result
from tests.conftest import REPO, auth, start_worker, stop_worker, wait_for
from tests.jobs.conftest import (
    MEDIUM_PDF,
    SMALL_PDF,
    Deployment,
    running_requests,
    server,
    upload,
    wait_job,
)
from tests.prereq import require

Client = Any


@pytest.fixture(autouse=True)
def _own_servers(deployment: Deployment) -> None:
    require(deployment.owned, "these tests kill servers: not with LONGDOC_TEST_VLLM_URLS")


@pytest.fixture(autouse=True)
def _deployment_whole_after(deployment: Deployment) -> Iterator[None]:
    """A server a test killed ("gone for good" included: for its job) is replaced once
    the test ends, however it ended, so no later test depends on running first."""
    yield
    if not _redis_up():  # a broker test that failed half-way
        _ensure_services()
    for role in ("gemma", "scout"):
        srv = getattr(deployment, role)
        try:
            up = httpx.get(f"{srv.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            up = False
        if not up:
            _revive(deployment, role, srv.port)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def worker_env(deployment: Deployment) -> dict[str, str]:
    return dict(deployment.env)


def _job(client: Client, key: str, doc: str, max_out: int, instruction: str) -> str:
    body = {"document_id": doc, "task": "prompt", "max_output_tokens": max_out,
            "params": {"instruction": instruction}}  # fmt: skip
    r = client.post("/v1/jobs", headers=auth(key), json=body)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    return job_id


def _redis_up() -> bool:
    ping = subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True, check=False)
    return ping.returncode == 0


def _ensure_services() -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "start-services.sh")], check=True)


def _revive(deployment: Deployment, role: str, port: int) -> Any:
    """A new server for `role` where the killed one listened, so the deployment's
    settings (its URLs) hold again; the package teardown stops whichever runs."""
    revived = server(role, deployment.logs, port=port)  # short path: zmq socket names
    setattr(deployment, role, revived)
    revived.start()
    revived.wait_ready(timeout=240)
    return revived


def _generating(client: Client, key: str, job_id: str) -> bool:
    j = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
    return j["status"] == "running" and (j["progress"] or {}).get("completion_tokens", 0) > 0


def _results(job_id: str) -> int:
    with get_sessionmaker()() as s:
        stmt = select(func.count()).select_from(Result).where(Result.job_id == uuid.UUID(job_id))
        return int(s.scalar(stmt) or 0)


def _leases(*job_ids: str) -> int:
    """Leases the given jobs hold (other modules' jobs are none of these tests' business)."""
    ids = [uuid.UUID(j) for j in job_ids]
    with get_sessionmaker()() as s:
        stmt = select(func.count()).select_from(KvLease).where(KvLease.job_id.in_(ids))
        return int(s.scalar(stmt) or 0)


@pytest.fixture
def worker(logs: Path, worker_env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_worker(logs / "worker-1.log", concurrency=2, env=worker_env)]
    yield procs
    for p in procs:
        stop_worker(p)


def test_redis_restart_mid_run(client: Client, api_key: str, worker: list[Any], logs: Path) -> None:
    doc = upload(client, api_key, SMALL_PDF)
    ids = [_job(client, api_key, doc, 48, f"Give {n} keywords of this page.") for n in (2, 3, 4, 5)]
    wait_for(lambda: any(_generating(client, api_key, i) for i in ids), timeout=120, interval=0.2)
    # The broker goes away with every message it held (it keeps nothing on disk).
    subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False)
    try:
        wait_for(lambda: not _redis_up(), timeout=10)
        # Back only once the worker has seen it go: the test is of its reconnecting.
        log = logs / "worker-1.log"
        wait_for(
            lambda: "Connection to broker lost" in log.read_text(errors="replace"),
            timeout=120,
            what="the worker to notice the broker is gone",
        )
    finally:
        # However the wait ended: every later test needs the broker.
        _ensure_services()
    for job_id in ids:
        done = wait_job(client, api_key, job_id, timeout=240)
        assert done["status"] == "succeeded", (done["error"], done["progress"])
        assert _results(job_id) == 1
    assert _leases(*ids) == 0


def test_worker_sigkill_mid_request(
    client: Client, api_key: str, worker: list[Any], logs: Path, worker_env: dict[str, str]
) -> None:
    doc = upload(client, api_key, MEDIUM_PDF)
    job_id = _job(client, api_key, doc, 400, "Explain this document section by section.")
    wait_for(lambda: _generating(client, api_key, job_id), timeout=120, interval=0.2)
    victim = worker.pop()
    os.killpg(victim.pid, signal.SIGKILL)  # the main process and its pool, no goodbye
    victim.wait()
    worker.append(start_worker(logs / "worker-2.log", concurrency=2, env=worker_env))
    done = wait_job(client, api_key, job_id, timeout=300)
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    assert done["attempts"] == 2
    assert _results(job_id) == 1 and _leases(job_id) == 0


def test_vllm_killed_and_back(
    client: Client, api_key: str, deployment: Deployment, worker: list[Any], logs: Path
) -> None:
    doc = upload(client, api_key, MEDIUM_PDF)  # runs on scout
    job_id = _job(client, api_key, doc, 300, "Describe every page of this document.")
    wait_for(lambda: _generating(client, api_key, job_id), timeout=120, interval=0.2)
    port = deployment.scout.port
    deployment.scout.stop()

    def waiting_again() -> bool:
        j = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
        return j["status"] == "waiting_for_capacity" and j["attempts"] == 1

    wait_for(waiting_again, timeout=60, interval=0.2)
    assert _leases(job_id) == 0  # the lease went back with the job
    j = client.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
    assert j["error"]["code"] == "backend_unreachable"
    revived = _revive(deployment, "scout", port)
    done = wait_job(client, api_key, job_id, timeout=300)
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    assert done["attempts"] == 2 and _results(job_id) == 1 and _leases(job_id) == 0
    assert running_requests(revived.url) == 0


def test_vllm_gone_for_good_fails_with_a_reason(
    client: Client, api_key: str, deployment: Deployment, logs: Path, worker_env: dict[str, str]
) -> None:
    env = {**worker_env, "LONGDOC_BACKEND_DOWN_TIMEOUT_S": "8"}
    proc = start_worker(logs / "worker-down.log", concurrency=1, env=env)
    try:
        doc = upload(client, api_key, SMALL_PDF)  # runs on gemma
        job_id = _job(client, api_key, doc, 300, "Describe this page in detail, line by line.")
        wait_for(lambda: _generating(client, api_key, job_id), timeout=120, interval=0.2)
        deployment.gemma.stop()
        done = wait_job(client, api_key, job_id, timeout=120)
    finally:
        stop_worker(proc)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "backend_down", done["error"]
    assert "no gemma backend was up" in done["error"]["reason"]
    assert _results(job_id) == 0 and _leases(job_id) == 0
    with get_sessionmaker()() as s:
        job = s.get(Job, uuid.UUID(job_id))
        assert job is not None and job.finished_at is not None
