"""Parts shared by bench/load.py and tests/api/test_load.py: the API in its own uvicorn
process, and a burst of concurrent requests against it, on loopback only."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def api_process(env: dict[str, str], log: Path, ready_timeout_s: float = 60) -> Iterator[str]:
    """`uvicorn service.api.main:app` with this process's environment plus `env`; yields
    its base URL once /healthz answers, and stops it (SIGTERM, then SIGKILL) after."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "service.api.main:app", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the API exited ({proc.returncode}); see {log}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer within {ready_timeout_s} s; see {log}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def seed_documents(url: str, key: str, n: int) -> None:
    """`n` small distinct text uploads for the tenant (parsing is not needed to list)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as c:
        for i in range(n):
            body = f"Document {i} of a load test, {uuid.uuid4()}.\n".encode()
            resp = c.post("/v1/documents", files={"file": (f"load-{i}.txt", body)}, timeout=60)
            resp.raise_for_status()


@dataclass
class Burst:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # no HTTP answer at all
    latencies: list[float] = field(default_factory=list)
    unexplained_503: int = 0  # a 503 without Retry-After
    wall_s: float = 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def summary(self) -> str:
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(self.statuses.items()))
        errs = ", ".join(f"{e}: {n}" for e, n in sorted(self.errors.items())) or "none"
        return (
            f"{len(self.latencies)} answered in {self.wall_s:.1f} s ({codes}); "
            f"no answer: {errs}; p50 {self.quantile(0.5):.2f} s, p99 {self.quantile(0.99):.2f} s"
        )


def burst(url: str, key: str, n: int, path: str, timeout_s: float = 120) -> Burst:
    """`n` GETs of `path` sent at once, each on its own connection."""

    async def run() -> Burst:
        out = Burst()
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=timeout_s
        ) as client:

            async def one() -> None:
                start = time.monotonic()
                try:
                    resp = await client.get(path)
                except httpx.HTTPError as exc:
                    out.errors[type(exc).__name__] += 1
                    return
                out.latencies.append(time.monotonic() - start)
                out.statuses[resp.status_code] += 1
                if resp.status_code == 503 and "retry-after" not in resp.headers:
                    out.unexplained_503 += 1

            start = time.monotonic()
            await asyncio.gather(*(one() for _ in range(n)))
            out.wall_s = time.monotonic() - start
        return out

    return asyncio.run(run())
