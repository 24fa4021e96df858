"""Parts of bench/e2e.py: the requests, the vLLM server, the direct (baseline) client,
and a Longdoc instance (`longdoc serve`) driven over its REST API."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pymupdf
import redis

from ingestion.documents.pagetext import clean_text
from ingestion.tasks.output import OutputError, parse_output
from ingestion.tasks.prompts import build_messages, render_pages, response_format
from ingestion.tasks.specs import validate
from service.backends import metrics as vllm_metrics
from service.backends.server import STRUCTURED_OUTPUT_ARGS, VllmServer, _group_pids, free_port
from service.config import Settings

CACHE = Settings().cache_dir  # LONGDOC_CACHE_DIR, as the service reads it
CORPUS = Path(os.environ.get("LONGDOC_CORPUS_DIR", CACHE / "corpus"))
SERVED = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the registry id: Longdoc derives KV from it
ROLE = "gemma"  # tried first by the router; `longdoc serve` puts SmolLM2 here too
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/14"
FINAL = ("succeeded", "failed", "cancelled")
_open_pdf: Any = pymupdf.open  # untyped

# Real corpus PDFs that each fit one SmolLM2 request: 900-2,300 tokens with the prompt
# (the server's /tokenize). The prefix phase's form is ~6,000 (4 pages; AES-128 with an
# empty user password, so it opens like any PDF).
DOCS = ("pdf/latex-ltnews01.pdf", "pdf/lilypond-score-bach-bwv610.pdf",
        "pdf-scanned/pikepdf-sandwich.pdf", "pdf/us-va-form-21-0966.pdf")  # fmt: skip
PREFIX_DOC = "pdf-encrypted/us-dd-form-0293.pdf"
# Free text and classify only: free text is always a usable result and classify's reason
# is bounded, so every job succeeds and (a) and (b) do the same work.
VARIANTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("summarize", {}),
    ("prompt", {"instruction": "List the main topics of the document with their pages."}),
    ("classify", {"labels": ["form", "manual", "newsletter", "music score", "other"]}),
    ("summarize", {"focus": "dates, numbers and names"}),
    ("prompt", {"instruction": "Write a one-line title for the document."}),
)


@dataclass(frozen=True)
class Req:
    doc: str  # relative to CORPUS
    task: str
    params: dict[str, Any]
    max_tokens: int


def throughput_requests(n: int, max_tokens: int) -> list[Req]:
    """`n` distinct requests, documents interleaved (request i on document i % 4), so no
    client sends requests on one document back to back. Past 20, instructions get a
    number: Longdoc returns the existing job for the same document + task + params."""
    out = []
    for i in range(n):
        task, params = VARIANTS[(i // len(DOCS)) % len(VARIANTS)]
        if rnd := i // (len(DOCS) * len(VARIANTS)):
            task, params = "prompt", {"instruction": f"Give {rnd + 1} key points."}
        # classify's reason (<= 160 characters) can take ~60 tokens before the label.
        budget = max(max_tokens, 96) if task == "classify" else max_tokens
        out.append(Req(DOCS[i % len(DOCS)], task, validate(task, params), budget))
    return out


def page_texts(rel: str) -> list[tuple[int, str]]:
    """The pages as Longdoc stores them (get_text, control characters dropped)."""
    with _open_pdf(CORPUS / rel) as doc:
        return [(i, clean_text(page.get_text())) for i, page in enumerate(doc, 1)]


def chat_body(req: Req, pages: list[tuple[int, str]]) -> dict[str, Any]:
    """What Longdoc's worker sends for a single-request job (it streams; this does not)."""
    body: dict[str, Any] = {"model": SERVED, "max_tokens": req.max_tokens, "temperature": 0.0}
    body["messages"] = build_messages(req.task, req.params, "single", render_pages(pages))
    if (fmt := response_format(req.task, req.params, "single")) is not None:
        body["response_format"] = fmt
    return body


def start_server(scratch: Path, cpu_cores: str | None) -> VllmServer:
    server = VllmServer(
        python=CACHE / "vllm-venv" / "bin" / "python",
        model_dir=CACHE / "models" / "smollm2-135m-instruct",
        served_model_name=SERVED,
        max_model_len=8192,
        kv_cache_gib=1,
        cpu_cores=cpu_cores,
        extra_args=STRUCTURED_OUTPUT_ARGS,
        log_path=scratch / "vllm.log",
        scratch_parent=scratch,
        env={"VLLM_SERVER_DEV_MODE": "1"},  # adds POST /reset_prefix_cache
    )
    server.start()
    return server


def reset_prefix_cache(url: str) -> None:
    # Refused (success false) while blocks are held, e.g. by a request ending just now.
    for _ in range(50):
        if httpx.post(f"{url}/reset_prefix_cache", timeout=10).json().get("success"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{url} would not reset its prefix cache")


def prefix_counters(url: str) -> tuple[float, float]:
    """(vllm:prefix_cache_hits_total, vllm:prefix_cache_queries_total), in tokens."""
    metrics = vllm_metrics.Metrics(httpx.get(f"{url}/metrics", timeout=10).raise_for_status().text)
    return (
        metrics.total("vllm:prefix_cache_hits_total"),
        metrics.total("vllm:prefix_cache_queries_total"),
    )


@dataclass
class Done:
    prompt: int
    completion: int
    latency_s: float
    usable: bool  # direct: Longdoc's output check passes; Longdoc: the job succeeded


@dataclass
class Run:
    wall_s: float
    done: list[Done] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)  # Longdoc's job views

    @property
    def tokens(self) -> int:
        return sum(d.prompt + d.completion for d in self.done)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s


def send_direct(client: httpx.Client, url: str, req: Req, pages: list[tuple[int, str]]) -> Done:
    t0 = time.perf_counter()
    r = client.post(f"{url}/v1/chat/completions", json=chat_body(req, pages))
    r.raise_for_status()
    latency, body = time.perf_counter() - t0, r.json()
    text, span = body["choices"][0]["message"]["content"], (pages[0][0], pages[-1][0])
    try:
        parse_output(req.task, req.params, "single", text, span)
        usable = True
    except OutputError:
        usable = False
    usage = body["usage"]
    return Done(usage["prompt_tokens"], usage["completion_tokens"], latency, usable)


def run_direct(url: str, reqs: Sequence[Req], texts: dict[str, Any], concurrency: int) -> Run:
    """A closed-loop client: `concurrency` requests in flight, in list order."""
    ex = ThreadPoolExecutor(concurrency)
    try:
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=concurrency)) as c:
            t0 = time.perf_counter()
            done = list(ex.map(lambda q: send_direct(c, url, q, texts[q.doc]), reqs))
            return Run(time.perf_counter() - t0, done)
    finally:  # on Ctrl-C, drop the requests not sent yet rather than send them all first
        ex.shutdown(wait=False, cancel_futures=True)


def _fields(req: Req) -> dict[str, Any]:
    return {"task": req.task, "params": req.params, "max_output_tokens": req.max_tokens}


class Longdoc:
    """`longdoc serve` (API + Celery worker) in a session of its own. Stack "embedded":
    SQLite database and SQLite broker; "postgres": a fresh Postgres database and Redis
    (`redis_url`: its db is flushed at start and stop, so another bench takes its own)."""

    def __init__(self, data_dir: Path, vllm_url: str, concurrency: int, stack: str,
                 redis_url: str = REDIS_URL) -> None:  # fmt: skip
        self.data_dir, self.stack, self.concurrency = data_dir, stack, concurrency
        self.redis_url = redis_url
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LONGDOC_")}
        self.env.update(
            LONGDOC_DATA_DIR=str(data_dir),
            LONGDOC_CACHE_DIR=str(CACHE),
            LONGDOC_BACKENDS=json.dumps([{"role": ROLE, "url": vllm_url}]),
            # SmolLM2 is neither Gemma nor Llama 4: counts come from its server's /tokenize.
            LONGDOC_TOKENIZERS="{}",
            LONGDOC_ADMISSION_POLL_S="0.1",
            LONGDOC_HEARTBEAT_INTERVAL_S="1",
            LONGDOC_BACKEND_REFRESH_INTERVAL_S="2",
            # One vLLM request per job, as in the baseline: the 135M model's `ask` JSON is
            # mostly unusable, and each retry would be a request (a) never makes.
            LONGDOC_MAX_OUTPUT_RETRIES="0",
        )
        self.db = f"ld_e2e_{uuid.uuid4().hex[:8]}" if stack == "postgres" else None
        if self.db:
            base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            self.env.update(LONGDOC_DATABASE_URL=f"{base}/{self.db}", LONGDOC_BROKER_URL=redis_url)
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "service.cli.app", "--data-dir", str(self.data_dir), *args]

    def new_key(self, tenant: str) -> None:
        """Become a new tenant: the same bytes and jobs are new to it, not de-duplicated."""
        out = subprocess.run(self._cli("keys", "create", "--tenant", tenant), env=self.env,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        self.client.headers["Authorization"] = f"Bearer {out.strip().splitlines()[-1]}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.db:
            redis.Redis.from_url(self.redis_url).flushdb()
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.db}"')
        self.new_key("warmup")  # before serve, which then makes no default key
        argv = self._cli("serve", "--port", self.url.rsplit(":", 1)[1])
        argv += ["--concurrency", str(self.concurrency)]
        argv.append("--no-vllm")  # LONGDOC_BACKENDS alone also keeps it from starting one
        with (self.data_dir / "serve.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 180) -> None:
        """Until the refresher has measured the backend (a job would wait for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"longdoc serve exited; see {self.data_dir / 'serve.log'}")
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                items = self.client.get("/v1/backends").json()["items"]
                if items and all(b["usable"] for b in items):
                    return
            time.sleep(0.5)
        raise RuntimeError(f"Longdoc not ready in {timeout:.0f} s; see {self.data_dir}")

    def upload(self, name: str, data: bytes, query: dict[str, Any] | None = None) -> Any:
        r = self.client.post("/v1/documents", params=query or {}, files={"file": (name, data)})
        r.raise_for_status()
        return r.json()

    def submit(self, req: Req) -> str:
        """Upload and run in one call (the client's whole job: bytes in, job out)."""
        query = {**_fields(req), "params": json.dumps(req.params)}
        path = CORPUS / req.doc
        return str(self.upload(path.name, path.read_bytes(), query)["job"]["id"])

    def create_job(self, doc_id: str, req: Req) -> str:
        r = self.client.post("/v1/jobs", json={"document_id": doc_id, **_fields(req)})
        r.raise_for_status()
        return str(r.json()["id"])

    def wait(self, path: str, done: Sequence[str], poll_s: float) -> Any:
        while (body := self.client.get(path).json())["status"] not in done:
            time.sleep(poll_s)
        return body

    def wait_jobs(self, ids: Sequence[str], poll_s: float) -> dict[str, dict[str, Any]]:
        """Poll the job list (one call for all) until every job in `ids` has ended."""
        want, seen = set(ids), {}
        while True:
            for j in self.client.get("/v1/jobs", params={"limit": 200}).json()["items"]:
                if j["id"] in want:
                    seen[j["id"]] = j
            if len(seen) == len(want) and all(j["status"] in FINAL for j in seen.values()):
                return seen
            time.sleep(poll_s)

    def stop(self) -> None:
        """SIGTERM the session (serve ends its worker), SIGKILL what is left; drop the DB."""
        proc, self.proc = self.proc, None
        for sig, grace in ((signal.SIGTERM, 40.0), (signal.SIGKILL, 5.0)):
            if proc is None or not _group_pids(proc.pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_pids(proc.pid):
                proc.poll()  # reap serve itself; the rest are its children
                time.sleep(0.2)
        if self.db:
            redis.Redis.from_url(self.redis_url).flushdb()
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            self.db = None
