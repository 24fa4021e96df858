"""docker-compose.yml's Longdoc services run as local processes, with the command and
the environment the file gives them: migrate, the API, worker-ingest, worker-ocr and worker-jobs
of the `cpu` profile, pointed at this run's Postgres and Redis and at the session's
vLLM CPU server (SmolLM2, as the profile's vllm-cpu serves it), instead of the
compose network's `postgres`, `redis` and `vllm-cpu`. A document goes through them
(upload, job, result), and each service's health check command passes.

Kept small: one 1-page document, a 32-token summary, one process per worker.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.backends.server import VllmServer, free_port
from tests.conftest import CACHE, REDIS_URL, REPO, _new_key, auth, corpus_file, wait_for
from tests.deploy.compose import (
    LONGDOC_SERVICES,
    command_of,
    dockerfile_entrypoint,
    load,
    stack_env,
)

SMALL_PDF = "pdf/latex-ltnews01.pdf"  # 1 page
# What the image and the compose network supply that a local process gets here: the
# image's ENV (Dockerfile), and the service names the compose file's URLs use.
IMAGE_ENV = ("LONGDOC_CACHE_DIR", "LONGDOC_DATA_DIR", "LONGDOC_HOST", "LONGDOC_PORT")
# The image's executables, as this checkout runs them.
LOCAL = {
    "longdoc": [sys.executable, "-m", "service.cli.app"],
    "celery": [sys.executable, "-m", "celery"],
}


class Stack:
    def __init__(self, server: VllmServer, database: str, root: Path) -> None:
        # One process per worker: two cores run this and the vLLM server. The server's
        # context is the session server's: the stack's backends expect the
        # --max-model-len the file gives vllm-cpu, and a shorter one is a mismatch.
        self.compose = load(
            stack_env(
                COMPOSE_PROFILES="cpu",
                INGEST_CONCURRENCY="1",
                OCR_CONCURRENCY="1",
                JOBS_CONCURRENCY="1",
                CPU_MAX_MODEL_LEN=str(server.max_model_len),
            )
        )
        self.server, self.database, self.root = server, database, root
        self.port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def service(self, name: str) -> dict[str, Any]:
        service: dict[str, Any] = self.compose["services"][name]
        return service

    def env(self, name: str) -> dict[str, str]:
        env = {k: str(v) for k, v in self.service(name)["environment"].items()}
        assert env["LONGDOC_DATABASE_URL"].startswith("postgresql+psycopg://longdoc:")
        assert env["LONGDOC_BROKER_URL"] == "redis://redis:6379/0"
        env["LONGDOC_DATABASE_URL"] = self.database
        env["LONGDOC_BROKER_URL"] = REDIS_URL
        servers = json.loads(env["LONGDOC_VLLM_STACK"])
        (cpu,) = [s for s in servers if s["service"] == "vllm-cpu"]
        assert cpu["url"] == "http://vllm-cpu:8000"
        cpu["url"] = self.server.url
        env["LONGDOC_VLLM_STACK"] = json.dumps(servers)
        image = {
            "LONGDOC_CACHE_DIR": str(CACHE),  # the tokenizer files, built here by make
            "LONGDOC_DATA_DIR": str(self.root / "data"),  # the longdoc-data volume
            "LONGDOC_HOST": "127.0.0.1",
            "LONGDOC_PORT": str(self.port),
        }
        # Nothing of this test process's own LONGDOC_ settings: only the file's.
        base = {k: v for k, v in os.environ.items() if not k.startswith("LONGDOC_")}
        return {
            **base,
            **image,
            **env,
            "PYTHONPATH": str(REPO),
            "HOSTNAME": socket.gethostname(),  # as Docker sets it in a container
        }

    def argv(self, words: list[str]) -> list[str]:
        return [*LOCAL[words[0]], *words[1:]]

    def command(self, name: str) -> list[str]:
        return self.argv([*dockerfile_entrypoint(), *command_of(self.service(name))])

    def start(self, name: str) -> None:
        log = (self.root / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            self.command(name),
            env=self.env(name),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def health(self, name: str) -> subprocess.CompletedProcess[str]:
        test = self.service(name)["healthcheck"]["test"]
        if test[0] == "CMD":
            argv = self.argv(list(test[1:]))
        else:  # CMD-SHELL: a shell runs the line, with the image's executables
            assert test[0] == "CMD-SHELL", test
            words = shlex.split(test[1])
            argv = ["sh", "-c", shlex.join(self.argv(words[:1])) + " " + test[1].split(" ", 1)[1]]
        return subprocess.run(
            argv, env=self.env(name), cwd=REPO, capture_output=True, text=True, timeout=120
        )

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def stack(
    smollm2_server: VllmServer, database: str, broker: Any, tmp_path: Path
) -> Iterator[Stack]:
    running = Stack(smollm2_server, database, tmp_path)
    yield running
    running.stop()


def test_the_compose_services_run_a_document_from_upload_to_result(stack: Stack) -> None:
    assert dockerfile_entrypoint() == ["longdoc"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert all(f"{name}=" in dockerfile for name in IMAGE_ENV)

    migrate = subprocess.run(
        stack.command("migrate"),
        env=stack.env("migrate"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "schema at head" in migrate.stdout
    for name in LONGDOC_SERVICES[1:]:
        stack.start(name)

    url = f"http://127.0.0.1:{stack.port}"
    with httpx.Client(base_url=url, timeout=30) as client:

        def api_up() -> bool:
            assert stack.procs["api"].poll() is None, stack.log("api")
            try:
                return client.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(api_up, timeout=120, what="the API")
        key = _new_key(f"compose-{os.urandom(3).hex()}")
        path = corpus_file(SMALL_PDF)
        with path.open("rb") as f:
            r = client.post(
                "/v1/documents",
                params={"task": "summarize", "max_output_tokens": 32},
                headers=auth(key),
                files={"file": (path.name, f, "application/pdf")},
            )
        assert r.status_code in (200, 202), r.text
        job_id = r.json()["job"]["id"]

        seen: list[dict[str, Any]] = []  # the job as last read

        def final() -> dict[str, Any] | None:
            for name, proc in stack.procs.items():
                assert proc.poll() is None, f"{name} exited:\n{stack.log(name)}"
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
            seen[:] = [job]
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        try:
            job = wait_for(final, timeout=300, interval=0.5, what="the job")
        except AssertionError as err:  # say where it stood, and what the worker logged
            raise AssertionError(f"{err}: {seen}\n{stack.log('worker-jobs')}") from None
        assert job["status"] == "succeeded", (job, stack.log("worker-jobs"))
        result = client.get(f"/v1/jobs/{job_id}/result", headers=auth(key)).json()
        assert result["text"].strip()
        # Routed to the cpu profile's server, as the stack description made it a backend.
        assert result["model"] in ("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")

    for name in LONGDOC_SERVICES[1:]:
        check = stack.health(name)
        assert check.returncode == 0, (name, check.stdout, check.stderr)
    stack.stop()
    # The API's check can fail: with the API stopped it says so.
    down = stack.health("api")
    assert down.returncode == 1 and "unhealthy" in down.stderr
