"""The compose stack's servers as Longdoc reads them (service/stack.py): the backends
and the deployment derived from .env, and the start-up check that refuses, with the
server and the reason, a stack whose models cannot fit the GPUs it gives them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from service import stack
from service.config import Settings
from service.deployment import paper_deployment
from tests.conftest import REPO
from tests.deploy.compose import LAYOUTS, load, stack_env


def _stack_settings(**overrides: str) -> dict[str, str]:
    """The LONGDOC_ stack variables docker-compose.yml gives the API for this .env."""
    env = load(stack_env(**overrides))["services"]["api"]["environment"]
    return {k: str(env[k]) for k in ("LONGDOC_VLLM_STACK", "LONGDOC_STACK_PROFILES")}


def _settings(**overrides: str) -> Settings:
    values = _stack_settings(**overrides)
    return Settings(
        vllm_stack=json.loads(values["LONGDOC_VLLM_STACK"]),
        stack_profiles=values["LONGDOC_STACK_PROFILES"],
    )


def test_the_example_env_is_the_paper_deployment_and_gives_the_servers_flags_as_backends() -> None:
    settings = _settings()
    assert settings.deployment == paper_deployment()
    backends = {b.role: b for b in settings.backends}
    assert str(backends["gemma"].url) == "http://vllm-gemma:8000/"
    assert (backends["gemma"].tp, backends["scout"].tp) == (1, 8)
    # --max-num-batched-tokens 8192 with --async-scheduling: two batches in flight.
    assert backends["gemma"].in_flight_tokens == backends["scout"].in_flight_tokens == 16_384
    assert backends["gemma"].kv_dtype == "bf16"
    # --max-model-len as each server gets it: one started shorter shows as mismatched.
    deployed = {r.role: r.max_model_len for r in settings.deployment}
    assert {r: b.max_model_len for r, b in backends.items()} == deployed
    assert deployed == {"gemma": 262_144, "scout": 1_000_000}
    assert set(settings.tokenizers) == {"gemma", "scout"}


def test_the_cpu_profile_serves_smollm2_in_the_gemma_role_counted_by_its_server() -> None:
    settings = _settings(COMPOSE_PROFILES="cpu")
    (backend,) = settings.backends
    assert (backend.role, str(backend.url)) == ("gemma", "http://vllm-cpu:8000/")
    assert backend.model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert backend.in_flight_tokens == 2_048 and backend.repetition_penalty == 1.1
    # Gemma's tokenizer file is not SmolLM2's vocabulary: its /tokenize counts.
    assert "gemma" not in settings.tokenizers
    (replica,) = settings.deployment
    assert (replica.kv_cache_bytes, replica.block_size) == (2**30, 128)
    assert _settings(COMPOSE_PROFILES="cpu", CPU_DTYPE="float32").backends[0].kv_dtype == "fp32"


def test_more_kv_settings_reach_the_backends_from_the_same_variables() -> None:
    settings = _settings(SCOUT_KV_CACHE_DTYPE="fp8", SCOUT_MAX_NUM_BATCHED_TOKENS="2048")
    scout = next(b for b in settings.backends if b.role == "scout")
    assert (scout.kv_dtype, scout.in_flight_tokens) == ("fp8", 4_096)


def _refusal(**overrides: str) -> str:
    with pytest.raises(ValidationError) as info:
        _settings(**overrides)
    return str(info.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"SCOUT_GPUS": "1,2,3,4"},
            "vllm-scout (.env: SCOUT_GPUS, SCOUT_TP): --tensor-parallel-size 8 runs on 8 GPU(s), "
            "but device_ids gives it 4 (1,2,3,4)",
        ),
        (
            {"GEMMA_GPUS": "1", "SCOUT_GPUS": "1,2,3,4,5,6,7,8"},
            "GPU 1 is given to vllm-gemma 0.9, vllm-scout 0.9: each server takes its "
            "--gpu-memory-utilization of the GPU, and these add up to 1.8 of 1",
        ),
        (
            {"SCOUT_GPUS": ""},
            "--tensor-parallel-size 8 runs on 8 GPU(s), but device_ids gives it 0 (none)",
        ),
        (
            {"GEMMA_QUANTIZATION": ""},
            # bf16 weights leave 13.0 GiB: what service/deployment.py's note computes.
            "leaves 13.0 GiB of KV cache per GPU, and one request of --max-model-len 262,144 "
            "tokens needs 33.3 GiB (bf16 KV); the longest that fits is about 15,456 tokens",
        ),
        (
            {"SCOUT_GPUS": "1", "SCOUT_TP": "1", "SCOUT_QUANTIZATION": "fp8"},
            "meta-llama/Llama-4-Scout-17B-16E-Instruct (fp8 weights, 101.5 GiB) does not fit on "
            "1 GPU(s) of 80 GiB at 0.9",
        ),
        ({"GEMMA_KV_CACHE_DTYPE": "int4"}, "--kv-cache-dtype must be one of"),
        ({"COMPOSE_PROFILES": "gpus"}, "profiles 'gpus' (COMPOSE_PROFILES) run none of"),
    ],
)
def test_a_stack_that_cannot_run_is_refused_naming_the_server_and_why(
    overrides: dict[str, str], expected: str
) -> None:
    assert expected in _refusal(**overrides)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_the_readme_layouts_pass_the_check(layout: str) -> None:
    assert _settings(**LAYOUTS[layout]).backends


def test_what_fits_passes_and_just_past_it_does_not() -> None:
    # bf16 Gemma fits with a shorter context and smaller batches: 118,976 tokens at most.
    bf16 = {"GEMMA_QUANTIZATION": "", "GEMMA_MAX_NUM_BATCHED_TOKENS": "2048"}
    _settings(**bf16, GEMMA_MAX_MODEL_LEN="118976")
    assert "about 118,976 tokens" in _refusal(**bf16, GEMMA_MAX_MODEL_LEN="118977")
    # Two servers on one H200 whose shares add up to more than all of it.
    shared = {**LAYOUTS["1xH200"], "SCOUT_GPU_MEMORY_UTILIZATION": "0.65"}
    assert "these add up to 1.05 of 1" in _refusal(**shared)


def test_a_token_is_needed_only_for_gated_models() -> None:
    gpu = stack.active(_settings().vllm_stack, "gpu")
    reason = stack.missing_token(gpu, {})
    assert reason is not None and "HF_TOKEN is not set" in reason
    assert "google/gemma-4-31B-it" in reason and "meta-llama/Llama-4-Scout" in reason
    assert stack.missing_token(gpu, {"HF_TOKEN": "hf_x"}) is None
    assert stack.missing_token(stack.active(_settings().vllm_stack, "cpu"), {}) is None


def _longdoc(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "service.cli.app", *args],
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "overrides", "expected"),
    [
        (["migrate"], {}, "HF_TOKEN is not set: google/gemma-4-31B-it,"),
        (["worker"], {"SCOUT_GPUS": "1,2,3,4"}, "LONGDOC_VLLM_STACK: vllm-scout (.env:"),
        (["migrate"], {"GEMMA_QUANTIZATION": ""}, "the longest that fits is about 15,456"),
        (["worker", "--queues", "parse"], {}, "queues are ingest, jobs, ocr; not parse"),
    ],
)
def test_longdoc_says_which_and_why_at_start_up_not_a_traceback(
    args: list[str], overrides: dict[str, str], expected: str
) -> None:
    result = _longdoc(args, _stack_settings(**overrides))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_the_api_health_check_fails_where_no_api_answers() -> None:
    from service.backends.server import free_port

    url = f"http://127.0.0.1:{free_port()}/healthz"
    result = _longdoc(["healthcheck", "--url", url, "--timeout", "2"], {})
    assert result.returncode == 1
    assert f"unhealthy: {url}: ConnectError" in result.stderr


def test_longdoc_route_plans_against_the_stack_it_runs_in() -> None:
    from service.cli.route import deployment_summary

    summary = deployment_summary(_settings(**LAYOUTS["8xH100"]))
    assert str(summary["source"]).startswith("the compose stack (LONGDOC_VLLM_STACK")
    replicas = {r["role"]: r for r in summary["replicas"]}  # type: ignore[attr-defined]
    # Scout bf16 over four 80 GiB GPUs at 0.9: 72 GiB less 50.8 GiB of weights each.
    assert (replicas["scout"]["tp"], replicas["scout"]["kv_cache_bytes"]) == (4, 22_809_411_328)
    assert deployment_summary(Settings())["source"] == "default (the paper deployment)"
