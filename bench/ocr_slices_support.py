"""Parts of bench/ocr_slices.py: the scan; the stack (a Postgres database and a Redis
db of the bench's own, the API in its own uvicorn process, `longdoc worker`
processes); an upload timed until it is parsed; CPU and RSS readings from /proc; and
the pure helpers its tests check (the slice schedule's ideal speed-up, phase times,
page comparison)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pymupdf
import redis

from bench.load_support import REPO, api_process
from bench.ocr import MIN_CHARS
from bench.ocr_support import image_only_pdf

_pymupdf: Any = pymupdf  # untyped
PG_ADMIN = os.environ.get("LONGDOC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
FINAL_DOC = ("parsed", "failed")


def check(ok: bool, what: str) -> None:
    """A failed check ends the bench (not `assert`: `python -O` would drop it)."""
    if not ok:
        raise SystemExit(f"ocr_slices: {what}")


def page_range(text: str) -> tuple[int, int]:
    """A page range "A-B" (1-based, both in) as (first, last)."""
    first, _, last = text.partition("-")
    lo, hi = int(first), int(last or first)
    if not 1 <= lo <= hi:
        raise ValueError(f"not a page range: {text!r}")
    return lo, hi


def spread(candidates: list[int], n: int) -> list[int]:
    """`n` of `candidates` spread evenly over them (all of them when no more)."""
    if len(candidates) <= n:
        return candidates
    step = len(candidates) / n
    return [candidates[int(step * k + step / 2)] for k in range(n)]


def build_scan(
    corpus: Path, source: str, pages: tuple[int, int], n: int, dpi: int, out: Path
) -> dict[str, Any]:
    """The scan of `n` pages of `source` within `pages`, each with MIN_CHARS of text."""
    src: Any = _pymupdf.open(corpus / source)
    try:
        lo, hi = pages[0] - 1, min(pages[1], src.page_count)
        full = [i for i in range(lo, hi) if len(src[i].get_text().strip()) >= MIN_CHARS]
        numbers = spread(full, n)
        check(len(numbers) == n, f"{source} has {len(numbers)} pages with enough text, not {n}")
        truth = image_only_pdf([src[i] for i in numbers], dpi, out)
    finally:
        src.close()
    return {"source": source, "pages": [i + 1 for i in numbers], "truth": truth, "dpi": dpi}


def ideal_speedup(pages: int, slice_pages: int, procs: int) -> float:
    """What `procs` processes can at best gain over one on `pages` pages cut into
    slices of `slice_pages`, every page taking the same time: each slice goes, in
    order, to the process that is free first (prefetch 1), so the last process to end
    holds ceil(slices / procs) slices' pages. 24 pages in 4s on 2: 2.0; 20: 1.67."""
    if pages < 1 or slice_pages < 1 or procs < 1:
        raise ValueError(f"need pages, slice_pages, procs >= 1, not {pages, slice_pages, procs}")
    sizes = [min(slice_pages, pages - i) for i in range(0, pages, slice_pages)]
    ends = [0] * procs
    for size in sizes:
        first_free = ends.index(min(ends))
        ends[first_free] += size
    return pages / max(ends)


@dataclass
class Sample:
    """One poll of the document: seconds since the upload started, its status, and
    its OCR progress (None while not in the slice phase)."""

    t: float
    status: str
    ocr_total: int | None
    ocr_done: int | None


def phases(samples: Sequence[Sample]) -> dict[str, float | None]:
    """Seconds of each phase, as far as the polls saw them: `plan` (upload, the first
    read without OCR, the plan; until the OCR progress appears), `slices` (until
    every page to OCR is done), `join` (the second read and the token counts, until
    parsed). A phase no poll saw (an inline parse) is None; `total` is to parsed."""
    planned = next((s.t for s in samples if s.ocr_total is not None), None)
    sliced = next(
        (s.t for s in samples if s.ocr_total is not None and s.ocr_done == s.ocr_total), None
    )
    parsed = next((s.t for s in samples if s.status in FINAL_DOC), None)
    return {
        "plan": planned,
        "slices": sliced - planned if sliced is not None and planned is not None else None,
        "join": parsed - sliced if parsed is not None and sliced is not None else None,
        "total": parsed,
    }


def mismatches(
    inline: Sequence[tuple[int, str, Sequence[str]]], stored: Sequence[dict[str, Any]]
) -> list[str]:
    """How the stored pages (the text endpoint's) differ from the inline ones
    (number, text, warnings): one line per page that differs, empty when equal."""
    want = {n: (t, list(w)) for n, t, w in inline}
    got = {p["number"]: (p["text"], list(p["warnings"])) for p in stored}
    out = []
    for n in sorted(want.keys() | got.keys()):
        if n not in got or n not in want:
            out.append(f"page {n}: {'missing' if n not in got else 'extra'} in the stored text")
        elif got[n][0] != want[n][0]:
            out.append(f"page {n}: text differs ({len(got[n][0])} vs {len(want[n][0])} chars)")
        elif got[n][1] != want[n][1]:
            out.append(f"page {n}: warnings {got[n][1]} vs {want[n][1]}")
    return out


def status_kib(pid: int, field_name: str) -> int:
    """A field of /proc/PID/status in KiB (VmHWM: the peak RSS; VmRSS: now)."""
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith(field_name + ":"))
    return int(line.split()[1])


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used, with those of its children
    it waited for (the tesseract command each page may run)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the name, in (), may hold spaces
    return sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime


def own_cpu_s() -> float:
    """This process's CPU seconds and its waited-for children's (the command's)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def busy_s() -> float:
    """CPU seconds every core of the machine has been busy since boot (not idle, not
    waiting for I/O): a run's share of it against its own CPU time tells how much
    of the machine others took meanwhile."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def wait_quiet(max_wait_s: float, cores: float = 0.3, window_s: float = 1.0) -> float:
    """Wait, up to `max_wait_s`, for a `window_s` in which the machine is busy less
    than `cores` cores (other users' work would slow a run down); the last window's
    busy cores."""
    deadline = time.monotonic() + max_wait_s
    while True:
        b0 = busy_s()
        time.sleep(window_s)
        busy = (busy_s() - b0) / window_s
        if busy < cores or time.monotonic() >= deadline:
            return busy


def pool_pids(pid: int) -> list[int]:
    """The prefork pool processes of the Celery worker `pid`: the ones that run tasks."""
    return sorted(int(p.pid) for p in psutil.Process(pid).children())


class Stack:
    """A Postgres database and a Redis db of the bench's own (flushed at start and
    end, the database dropped) and the API on them; workers come and go per run."""

    def __init__(self, scratch: Path, redis_url: str, extra_env: dict[str, str]) -> None:
        self.scratch, self.redis_url = scratch, redis_url
        self.db = f"ld_ocr_slices_{uuid.uuid4().hex[:8]}"
        base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        keep = ("LONGDOC_CACHE_DIR", "LONGDOC_CORPUS_DIR")
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("LONGDOC_") or k in keep
        }
        self.env.update(
            LONGDOC_DATA_DIR=str(scratch / "data"),
            LONGDOC_DATABASE_URL=f"{base}/{self.db}",
            LONGDOC_BROKER_URL=redis_url,
            LONGDOC_BACKENDS="[]",  # no jobs: the ingest path alone
            LONGDOC_LOG_FORMAT="text",
            **extra_env,
        )
        self.url = ""
        self._api: contextlib.ExitStack | None = None

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "service.cli.app", *args]

    def __enter__(self) -> Stack:
        redis.Redis.from_url(self.redis_url).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.new_key("migrate")  # `keys create` migrates the new database first
        self._api = contextlib.ExitStack()
        self.url = self._api.enter_context(api_process(self.env, self.scratch / "api.log"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._api is not None:
            self._api.close()
        redis.Redis.from_url(self.redis_url).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')

    def new_key(self, tenant: str, env: dict[str, str] | None = None) -> str:
        """A key of a new tenant: the same scan is new to it, not de-duplicated."""
        out = subprocess.run(
            self._cli("keys", "create", "--tenant", tenant), env={**self.env, **(env or {})},
            cwd=REPO, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return out.strip().splitlines()[-1]

    @contextlib.contextmanager
    def worker(
        self, queues: str, concurrency: int, env: dict[str, str], log: Path
    ) -> Iterator[subprocess.Popen[bytes]]:
        """`longdoc worker --queues Q --concurrency N`, its own session; stopped after."""
        argv = self._cli("worker", "--queues", queues, "--concurrency", str(concurrency))
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        try:
            yield proc
        finally:
            for sig, grace in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)


@dataclass
class Upload:
    doc: dict[str, Any]
    samples: list[Sample] = field(default_factory=list)


def upload_and_wait(
    url: str, key: str, name: str, data: bytes, poll_s: float = 0.2, timeout_s: float = 900
) -> Upload:
    """Upload `data` and poll the document until it is parsed or failed. Times are
    from just before the upload's request."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        t0 = time.perf_counter()
        resp = c.post("/v1/documents", files={"file": (name, data)})
        resp.raise_for_status()
        doc_id, samples = resp.json()["id"], []
        while True:
            doc = c.get(f"/v1/documents/{doc_id}").raise_for_status().json()
            progress = doc["progress"]
            samples.append(
                Sample(time.perf_counter() - t0, doc["status"],
                       progress.get("ocr_pages_total"), progress.get("ocr_pages_done"))
            )  # fmt: skip
            if doc["status"] in FINAL_DOC:
                return Upload(doc, samples)
            if samples[-1].t > timeout_s:
                raise RuntimeError(f"{name} not parsed in {timeout_s:.0f} s: {doc}")
            time.sleep(poll_s)


def text_pages(url: str, key: str, doc_id: str) -> list[dict[str, Any]]:
    """The parsed document's pages as the text endpoint gives them."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        resp = c.get(f"/v1/documents/{doc_id}/text").raise_for_status()
        return list(resp.json()["pages"])
