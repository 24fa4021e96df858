"""docker-compose.yml read as Compose reads it: `.env` variables substituted into
every string (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `$$`),
YAML anchors and merge keys resolved by the YAML loader. The deploy tests check the
file through this, and run its Longdoc services from it."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
LONGDOC_SERVICES = ("migrate", "api", "worker-ingest", "worker-ocr", "worker-jobs")
VLLM_SERVICES = ("vllm-gemma", "vllm-scout", "vllm-cpu")

# The layouts README "Compose" describes, as changes to .env.example.
LAYOUTS: dict[str, dict[str, str]] = {
    "example": {},
    "cpu": {"COMPOSE_PROFILES": "cpu"},
    "8xH100": {"SCOUT_GPUS": "4,5,6,7", "SCOUT_TP": "4"},
    "1xH200": {
        "GPU_MEMORY_GIB": "139.8",
        "GEMMA_GPU_MEMORY_UTILIZATION": "0.4",
        "GEMMA_MAX_NUM_BATCHED_TOKENS": "2048",
        "SCOUT_CHECKPOINT": "RedHatAI/Llama-4-Scout-17B-16E-Instruct-quantized.w4a16",
        "SCOUT_GPUS": "0",
        "SCOUT_TP": "1",
        "SCOUT_GPU_MEMORY_UTILIZATION": "0.55",
        "SCOUT_MAX_MODEL_LEN": "400000",
    },
    "fp8-kv": {"GEMMA_KV_CACHE_DTYPE": "fp8", "SCOUT_KV_CACHE_DTYPE": "fp8"},
    "hosts": {"GEMMA_URL": "http://gpu-a:8000", "SCOUT_URL": "http://gpu-b:8000"},
}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<sep>:?[-?])(?P<arg>[^}]*))?\})"
)


class MissingVariable(KeyError):
    pass


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines; `#` comments and blank lines skipped, as Compose's .env."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        env[key.strip()] = value.strip()
    return env


def variables_used(text: str) -> set[str]:
    return {m["named"] or m["braced"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["named"] or m["braced"]
        sep, arg = m["sep"], m["arg"] or ""
        present = name in env and (env[name] != "" or not (sep or "").startswith(":"))
        if present:
            return env[name]
        if sep in (":-", "-"):
            return arg
        if sep in (":?", "?"):
            raise MissingVariable(f"{name}: {arg}")
        if name not in env:
            raise MissingVariable(name)
        return env[name]

    return _VARIABLE.sub(one, value)


def load(env: Mapping[str, str]) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return dict(interpolate(raw, env))


def stack_env(**overrides: str) -> dict[str, str]:
    """.env.example with `overrides` (the shell's environment wins over .env)."""
    return {**read_env_file(), **overrides}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def dockerfile_entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form), which every Longdoc service's command follows."""
    import json

    lines = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("ENTRYPOINT")]
    assert len(lines) == 1, lines
    entry: list[str] = json.loads(lines[0].removeprefix("ENTRYPOINT"))
    return entry
