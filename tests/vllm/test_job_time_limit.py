"""A job whose request outlives the task's soft time limit fails as `timeout`, once:
its lease is given back at once (not left to expire, which ran the job three times),
and the server's request is aborted.

Real parts: the session's SmolLM2 vLLM server behind a TCP relay (tests/netrelay.py)
that stalls it once the job is admitted, a real Celery worker with a 20 s soft limit,
the API on Postgres.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from service.backends.server import VllmServer
from service.config import Settings
from service.db import get_sessionmaker
from service.models import KvLease, Result
from tests.api.test_documents import settled, upload
from tests.conftest import api_settings, auth, start_worker, stop_worker, wait_for
from tests.jobs.conftest import running_requests, wait_job
from tests.netrelay import Forwarder
from tests.vllm.conftest import SMOLLM2_ID


def test_soft_time_limit_fails_the_job_as_timeout_once(
    smollm2_server: VllmServer, api: Any, api_key: str, tmp_path: Path
) -> None:
    relay = Forwarder(smollm2_server.port)
    relay.start()
    env = {
        "LONGDOC_BACKENDS": json.dumps([{"role": "gemma", "url": relay.url, "model": SMOLLM2_ID}]),
        "LONGDOC_TOKENIZERS": "{}",  # counted by the server's own /tokenize
        "LONGDOC_JOB_SOFT_TIME_LIMIT_S": "20",
        "LONGDOC_JOB_TIME_LIMIT_S": "60",
        "LONGDOC_ADMISSION_WAIT_S": "5",
        "LONGDOC_ADMISSION_POLL_S": "0.2",
        # The limit, not the client's stall timeout, is what ends this request.
        "LONGDOC_VLLM_READ_TIMEOUT_S": "300",
        "LONGDOC_VLLM_MIN_PREFILL_TOKENS_PER_S": "100",
        "LONGDOC_VLLM_MIN_DECODE_TOKENS_PER_S": "20",
        "LONGDOC_BACKEND_REFRESH_INTERVAL_S": "1",
        "LONGDOC_BACKEND_PROBE_TIMEOUT_S": "2",
    }
    log = tmp_path / "worker.log"
    # The same settings, handed to the in-process API and, as its environment, to the worker.
    settings = Settings(
        **{
            k.removeprefix("LONGDOC_").lower(): json.loads(v) if v[:1] in "[{" else v
            for k, v in env.items()
        }
    )
    with api_settings(settings):
        worker = start_worker(log, env=env)
        try:
            text = tmp_path / "tale.txt"
            text.write_text(f"A tale ({uuid.uuid4()}) of a job that ran out of time.\n" * 10)
            doc = settled(api, api_key, upload(api, api_key, text).json()["id"])
            assert doc["status"] == "parsed", doc
            body = {"document_id": doc["id"], "task": "prompt", "max_output_tokens": 150,
                    "params": {"instruction": "Write a long story about this note."}}  # fmt: skip
            r = api.post("/v1/jobs", headers=auth(api_key), json=body)
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]

            def admitted() -> bool:
                j = api.get(f"/v1/jobs/{job_id}", headers=auth(api_key)).json()
                return bool(j["status"] == "running")

            wait_for(admitted, timeout=120, interval=0.05)
            relay.hold()  # the server goes silent: its request hangs
            done = wait_job(api, api_key, job_id, timeout=120)
            # Aborted on the server: the client's disconnect goes through the held relay.
            wait_for(lambda: running_requests(smollm2_server.url) == 0, timeout=60)
        finally:
            stop_worker(worker)
            relay.stop()
    assert done["status"] == "failed", done
    assert done["error"]["code"] == "timeout", done["error"]
    assert "job time limit of 20 s" in done["error"]["reason"]
    assert done["attempts"] == 1
    with get_sessionmaker()() as s:
        jid = uuid.UUID(job_id)
        assert s.scalar(select(func.count()).select_from(KvLease).where(KvLease.job_id == jid)) == 0
        assert s.scalar(select(func.count()).select_from(Result).where(Result.job_id == jid)) == 0
