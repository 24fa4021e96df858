"""The vLLM CPU server that `longdoc serve` starts when no backend is configured.

With nothing configured, `longdoc serve` should end the README's first command with a
real summary of a real document, so it serves the small SmolLM2 135M model that
scripts/build-vllm.sh (`make vllm`) converts, on the CPU, from vLLM's own venv. The
server is handed to the API and the worker the way any backend is: `serving()` gives
the Settings with it as the only backend, which `serve` passes to the processes it
starts (as their LONGDOC_BACKENDS).

SmolLM2's vocabulary is neither Gemma's nor Llama 4's, so the role it stands in for
must not be counted with that role's tokenizer file: the role's entry is dropped from
the tokenizers, and token counts for it come from the server's /tokenize.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from service.backends.server import STRUCTURED_OUTPUT_ARGS, VllmServer
from service.config import Settings
from service.deployment import BackendConfig

# The registry id (ingestion/capacity/models.toml): served under this name, the worker finds the
# model's KV geometry in the registry and derives capacity from the server's blocks.
SERVED_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
MODEL_FOLDER = "smollm2-135m-instruct"
# The smallest model is tried first by the router, so the one backend goes there.
ROLE = "gemma"
MISSING = "no vLLM here: run `make vllm`; documents are parsed but jobs wait for a backend"

# `python -m vllm...` as VllmServer runs it, plus a thread that ends the server's whole
# process group when `serve` dies: VllmServer starts it in a session of its own (so
# stop() can end the engine core too), where a SIGKILLed `serve` would leave ~3 GB
# running. Not PR_SET_PDEATHSIG: a SIGTERM to the API process alone, while it waits for
# its engine core to start, does not end it (measured); the group must be signalled.
_LAUNCHER = """
import os, runpy, signal, sys, threading, time
parent = int(sys.argv.pop(1))
def watch():
    while os.getppid() == parent:
        time.sleep(1)
    os.killpg(0, signal.SIGTERM)
    time.sleep(15)
    os.killpg(0, signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
sys.argv[0] = sys.argv.pop(1)
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


class _ServerDyingWithParent(VllmServer):
    def command(self) -> list[str]:
        argv = super().command()
        assert argv[1] == "-m", argv  # [python, "-m", module, *args]
        return [argv[0], "-c", _LAUNCHER, str(os.getpid()), *argv[2:]]


def vllm_parts(cache_dir: Path) -> tuple[Path, Path] | None:
    """(python, model folder) of the vLLM venv and SmolLM2 built under `cache_dir`, or
    None if either is missing or half-built (the same markers as tests/vllm/conftest.py)."""
    venv = cache_dir / "vllm-venv"
    model = cache_dir / "models" / MODEL_FOLDER
    python = venv / "bin" / "python"
    if not (python.is_file() and (venv / ".longdoc-vllm").is_file()):
        return None
    if not (model / "SOURCE.json").is_file():
        return None
    return python, model


def _scratch_parent(data_dir: Path) -> Path | None:
    """The data directory, unless it is too long for vLLM's ZMQ sockets: they are files
    in the scratch directory (`<parent>/longdoc-vllm-XXXXXXXX/<uuid>`, 59 characters
    past the parent), and a socket path over 107 bytes makes vLLM fail to start."""
    return data_dir if len(os.fsencode(data_dir.resolve())) <= 40 else None  # None: /tmp


CPU_MIN_PREFILL_TOKENS_PER_S = 10
# Greedy SmolLM2 135M loops (one sentence 47 times over the LaTeX3 style guide); with
# this penalty it writes real sentences (tests/test_embedded.py checks the summary).
SAMPLING = {"temperature": 0.0, "repetition_penalty": 1.1}


def start(settings: Settings, echo: Callable[[str], None]) -> VllmServer | None:
    """Start the server and wait until it answers (`serving()` then gives the settings
    that use it).

    Returns None (having said why) when the vLLM parts are not built. If the server
    does not come up (VllmServerError, with the log tail) or the wait is interrupted
    (SIGTERM, Ctrl-C), it is stopped before the exception goes on."""
    parts = vllm_parts(settings.cache_dir)
    if parts is None:
        echo(MISSING)
        return None
    python, model_dir = parts
    log_path = settings.data_dir / "vllm.log"
    server = _ServerDyingWithParent(
        python=python,
        model_dir=model_dir,
        served_model_name=SERVED_NAME,
        max_model_len=settings.embedded_vllm_max_model_len,
        kv_cache_gib=settings.embedded_vllm_kv_gib,
        extra_args=STRUCTURED_OUTPUT_ARGS,
        log_path=log_path,
        scratch_parent=_scratch_parent(settings.data_dir),
        dtype=settings.vllm_dtype,
    )
    echo(f"starting vLLM (SmolLM2 135M, CPU, {server.dtype}) on {server.url}, log {log_path} ...")
    server.start()
    try:
        waited = server.wait_ready(timeout=settings.embedded_vllm_ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    echo(f"vLLM ready in {waited:.0f} s")
    return server


def serving(settings: Settings, url: str) -> Settings:
    """`settings` with the embedded server at `url` as the only backend."""
    update: dict[str, object] = {
        "backends": [BackendConfig.model_validate({"role": ROLE, "url": url, **SAMPLING})],
        "tokenizers": {role: path for role, path in settings.tokenizers.items() if role != ROLE},
    }
    # The default first-token budget assumes a GPU's prefill; this server may run on
    # a CPU that emulates bf16 (~30 tokens/s on AVX2), shared by concurrent requests.
    # An operator's own value stays.
    if "vllm_min_prefill_tokens_per_s" not in settings.model_fields_set:
        update["vllm_min_prefill_tokens_per_s"] = float(CPU_MIN_PREFILL_TOKENS_PER_S)
    return settings.model_copy(update=update)


def stop(server: VllmServer | None, echo: Callable[[str], None]) -> None:
    if server is None:
        return
    t0 = time.monotonic()
    server.stop()
    echo(f"vLLM stopped in {time.monotonic() - t0:.1f} s")
