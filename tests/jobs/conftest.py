"""A real two-role deployment for the jobs tests: vLLM CPU servers for `gemma`
(Gemma 3 270M, context 2,048) and `scout` (SmolLM2 135M, context 8,192), a real
Celery worker on both queues, Postgres and Redis from tests/conftest.py.

Different contexts make the router choose for real: a 1-page PDF fits gemma, a
5-page one only scout, a 21-page one neither, so it is split (map on scout) and
combined (the reduce fits gemma). Gemma is counted with Longdoc's own Gemma 3
tokenizer file (the served model's vocabulary); SmolLM2 has no file, so its
counts come from its server's /tokenize. Servers are served under their registry
ids, so KV capacity is derived from the registry as on a real deployment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.backends import metrics as vllm_metrics
from service.backends.server import STRUCTURED_OUTPUT_ARGS, VllmServer
from service.config import Settings, as_environment
from tests.conftest import CORPUS, api_settings, auth, start_worker, stop_worker, wait_for
from tests.prereq import require
from tests.vllm.conftest import CACHE, VLLM_PYTHON, need_vllm

GEMMA_ID = "google/gemma-3-270m"
SCOUT_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GEMMA_LEN, SCOUT_LEN = 2048, 8192
GEMMA_TOKENIZER = CACHE / "tokenizers" / "gemma" / "tokenizer.json"

SMALL_PDF = "pdf/latex-ltnews01.pdf"  # 1 page, ~1,000 Gemma tokens: gemma
MEDIUM_PDF = "pdf/latex3-styleguide.pdf"  # 5 pages, ~2,700: scout
LONG_PDF = "pdf/latex-usrguide.pdf"  # 21 pages, ~11,000: map-reduce


@dataclass
class Deployment:
    gemma: Any  # VllmServer, or _Running when reusing servers
    scout: Any
    settings: Settings  # the in-process API's and the test's own calls'
    env: dict[str, str]  # the same, for the worker processes
    logs: Path
    owned: bool = True  # False: servers someone else runs; tests that kill them skip


@dataclass
class _Running:
    url: str


# For working on these tests: LONGDOC_TEST_VLLM_URLS='{"gemma": URL, "scout": URL}' reuses
# servers started as `server()` below starts them, instead of starting two per run.
_REUSE = os.environ.get("LONGDOC_TEST_VLLM_URLS")


def server(role: str, logs: Path, port: int = 0) -> VllmServer:
    model, name, length, core = (
        ("gemma3-270m", GEMMA_ID, GEMMA_LEN, "0")
        if role == "gemma"
        else ("smollm2-135m-instruct", SCOUT_ID, SCOUT_LEN, "1")
    )
    return VllmServer(
        python=VLLM_PYTHON,
        model_dir=need_vllm(model),
        served_model_name=name,
        max_model_len=length,
        kv_cache_gib=1,
        cpu_cores=core,
        port=port,
        extra_args=STRUCTURED_OUTPUT_ARGS,
        log_path=logs / f"{role}-{os.urandom(3).hex()}.log",
        scratch_parent=logs,
    )


def _settings(gemma: Any, scout: Any) -> Settings:
    return Settings(
        backends=[{"role": "gemma", "url": gemma.url}, {"role": "scout", "url": scout.url}],
        tokenizers={"gemma": GEMMA_TOKENIZER},
        lease_ttl_s=3,
        admission_poll_s=0.2,
        admission_wait_s=20,
        backend_refresh_interval_s=1,
        backend_probe_timeout_s=2,
        job_redispatch_after_s=4,
        vllm_backoff_s=0.5,
        vllm_max_retries=2,
        vllm_read_timeout_s=30,
        # CPU servers: two 5,500-token map requests prefilled together at ~16 tokens/s
        # each on an AVX2-only machine; the default (200/s) timed them out.
        vllm_min_prefill_tokens_per_s=10,
        backend_down_timeout_s=300,
    )


@pytest.fixture(scope="package")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, database: str, broker: redis.Redis
) -> Iterator[Deployment]:
    require(GEMMA_TOKENIZER.is_file(), f"{GEMMA_TOKENIZER} missing: run make tokenizers")
    logs = tmp_path_factory.mktemp("vllm-jobs")
    if _REUSE:
        urls = json.loads(_REUSE)
        yield from _deploy(_Running(urls["gemma"]), _Running(urls["scout"]), logs, owned=False)
        return
    gemma, scout = server("gemma", logs), server("scout", logs)
    with gemma, scout:  # both start at once: ~40 s, not 80
        gemma.wait_ready(timeout=240)
        scout.wait_ready(timeout=240)
        yield from _deploy(gemma, scout, logs, owned=True)


def _deploy(gemma: Any, scout: Any, logs: Path, *, owned: bool) -> Iterator[Deployment]:
    settings = _settings(gemma, scout)
    with api_settings(settings):
        refresh_backends(settings)
        deployment = Deployment(gemma, scout, settings, as_environment(settings), logs, owned)
        try:
            yield deployment
        finally:
            if owned:  # tests may have replaced a server they killed
                deployment.gemma.stop()
                deployment.scout.stop()


def refresh_backends(settings: Settings) -> None:
    """Write the backends' rows now (the worker's refresher does it every second)."""
    from service.backends.discovery import refresh
    from service.db import get_sessionmaker
    from service.models import utcnow

    with get_sessionmaker()() as session:
        refresh(session, settings, utcnow())


@pytest.fixture(scope="module")
def job_worker(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(
        tmp_path_factory.mktemp("job-worker") / "worker.log", concurrency=3, env=deployment.env
    )
    yield proc
    stop_worker(proc)


def corpus_pdf(rel: str) -> Path:
    path = CORPUS / rel
    require(path.is_file(), f"corpus file {path} missing: run make corpus")
    return path


def upload(client: object, key: str, rel: str) -> str:
    path = corpus_pdf(rel)
    with path.open("rb") as f:
        r = client.post(  # type: ignore[attr-defined]
            "/v1/documents", headers=auth(key), files={"file": (path.name, f, "application/pdf")}
        )
    assert r.status_code in (200, 202), r.text
    doc_id: str = r.json()["id"]
    wait_for(lambda: _doc(client, key, doc_id)["status"] in ("parsed", "failed"), timeout=120)
    return doc_id


def _doc(client: object, key: str, doc_id: str) -> dict[str, object]:
    r = client.get(f"/v1/documents/{doc_id}", headers=auth(key))  # type: ignore[attr-defined]
    body: dict[str, object] = r.json()
    return body


def wait_job(client: object, key: str, job_id: str, timeout: float = 240) -> dict[str, object]:
    final = ("succeeded", "failed", "cancelled")

    def done() -> dict[str, object] | None:
        body = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()  # type: ignore[attr-defined]
        return body if body["status"] in final else None

    result: dict[str, object] = wait_for(done, timeout=timeout, interval=0.1)
    return result


def running_requests(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).raise_for_status().text
    return vllm_metrics.Metrics(text).total("vllm:num_requests_running")


@pytest.fixture(scope="package")
def api_key(database: str) -> str:
    """A tenant of the jobs tests' own: the same corpus bytes uploaded elsewhere in the
    run must not come back here as an existing document, nor the other way round."""
    from tests.conftest import _new_key

    return _new_key(f"jobs-{os.urandom(3).hex()}")
