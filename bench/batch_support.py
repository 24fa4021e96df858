"""Parts of bench/batch.py: an archive batch driven over Longdoc's REST API, the
in-process ingest baseline, and the API's peak RSS while an archive streams in."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.batch_corpus import Entry
from bench.e2e_support import Longdoc
from bench.ingest import full_path
from ingestion.documents.formats import detect_media_type_path
from ingestion.types import IngestError

FINAL_DOC = ("parsed", "failed")
ENDED = ("completed", "failed", "cancelled", "expired")


@dataclass
class Ingested:
    docs: int
    pages: int
    failed: int
    wall_s: float

    @property
    def docs_min(self) -> float:
        return 60 * self.docs / self.wall_s

    @property
    def pages_s(self) -> float:
        return self.pages / self.wall_s


def single_ingest(entries: list[Entry]) -> Ingested:
    """Each document parsed to a text file and counted for both roles, one after another
    in this process (bench/ingest.py's `full_path`), tokenizers loaded before timing."""
    types = [detect_media_type_path(e.path, e.name) for e in entries]
    with contextlib.suppress(IngestError):
        full_path(str(entries[0].path), types[0])  # loads both tokenizers
    pages = failed = 0
    t0 = time.perf_counter()
    for e, media_type in zip(entries, types, strict=True):
        try:
            pages += full_path(str(e.path), media_type)[0]
        except IngestError:
            failed += 1
    return Ingested(len(entries), pages, failed, time.perf_counter() - t0)


def post_archive(ld: Longdoc, tar: Path, query: dict[str, Any]) -> str:
    """The archive as a multipart upload, read from disk as it is sent; the batch id."""
    with tar.open("rb") as f:
        r = ld.client.post(
            "/v1/batches/archive",
            params=query,
            files={"file": (tar.name, f, "application/x-tar")},
            timeout=1800,
        )
    r.raise_for_status()
    return str(r.json()["id"])


def documents(ld: Longdoc) -> list[dict[str, Any]]:
    """Every document of the client's tenant (pages of 200)."""
    out: list[dict[str, Any]] = []
    while True:
        page = ld.client.get("/v1/documents", params={"limit": 200, "offset": len(out)}).json()
        out += page["items"]
        if not page["items"] or len(out) >= page["total"]:
            return out


def final_requests(batch: dict[str, Any]) -> bool:
    c = batch["request_counts"]
    ended = c["completed"] + c["failed"] + c["cancelled"] + c["expired"]
    return bool(c["total"]) and ended >= int(c["total"])


def batch_ingest(ld: Longdoc, tar: Path, expected: int, poll_s: float = 0.5) -> Ingested:
    """From the upload's first byte until each entry's document is parsed or failed
    (or, should an entry make none, until every request of the batch has ended)."""
    t0 = time.perf_counter()
    batch_id = post_archive(ld, tar, {"task": "summarize", "max_output_tokens": 16})
    while True:
        docs = documents(ld)
        done = [d for d in docs if d["status"] in FINAL_DOC]
        batch = ld.client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] == "failed":
            raise RuntimeError(f"the batch failed: {batch['errors']}")
        if len(done) >= expected or (final_requests(batch) and len(done) == len(docs)):
            wall = time.perf_counter() - t0
            pages = sum(d["page_count"] or 0 for d in done)
            failed = sum(d["status"] == "failed" for d in done)
            return Ingested(len(done), pages, failed, wall)
        time.sleep(poll_s)


def wait_parsed(ld: Longdoc, ids: list[str], poll_s: float = 0.2) -> None:
    for doc_id in ids:
        ld.wait(f"/v1/documents/{doc_id}", FINAL_DOC, poll_s)


def batch_results(ld: Longdoc, batch_id: str, poll_s: float = 0.2) -> list[dict[str, Any]]:
    """Waits until every request of the batch has ended; its result lines."""
    while not final_requests(ld.client.get(f"/v1/batches/{batch_id}").json()):
        time.sleep(poll_s)
    text = ld.client.get(f"/v1/batches/{batch_id}/results", timeout=120).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def line_tokens(line: dict[str, Any]) -> tuple[int, int, bool]:
    """(prompt, completion, succeeded) of one result line."""
    body = (line.get("response") or {}).get("body") or {}
    ok = line.get("error") is None and bool(body)
    return body.get("prompt_tokens") or 0, body.get("completion_tokens") or 0, ok


class PeakRss(threading.Thread):
    """The largest RSS of a process and its children together, sampled every
    `interval_s` until `stop()`."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.proc, self.interval_s = psutil.Process(pid), interval_s
        self.peak = self.samples = 0
        self._stop_event = threading.Event()

    def rss(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(psutil.NoSuchProcess):
                self.peak = max(self.peak, self.rss())
                self.samples += 1
            self._stop_event.wait(self.interval_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def api_pid(url: str) -> int:
    """The uvicorn child of this process that listens on `url`'s port."""
    port = url.rsplit(":", 1)[1]
    for child in psutil.Process().children():
        cmd = child.cmdline()
        if "uvicorn" in cmd and port in cmd:
            return int(child.pid)
    raise RuntimeError(f"no uvicorn child on port {port}")


@contextlib.contextmanager
def sampling(url: str) -> Iterator[PeakRss]:
    sampler = PeakRss(api_pid(url))
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()


def upload_peak(url: str, key: str, tar: Path) -> dict[str, Any]:
    """The API's RSS before and at its peak while `tar` streams in as an archive batch
    (from the first byte until the 202, which comes after the archive's scan)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        client.get("/v1/batches")  # first-request paths, before the idle sample
        with sampling(url) as sampler:
            time.sleep(0.5)
            idle = sampler.peak
            t0 = time.perf_counter()
            with tar.open("rb") as f:
                r = client.post(
                    "/v1/batches/archive",
                    params={"task": "summarize"},
                    files={"file": (tar.name, f, "application/x-tar")},
                    timeout=1800,
                )
            wall = time.perf_counter() - t0
        r.raise_for_status()
        body = r.json()
    return {
        "bytes": tar.stat().st_size,
        "entries": body["request_counts"]["total"],
        "idle_mib": idle / 2**20,
        "peak_mib": sampler.peak / 2**20,
        "samples": sampler.samples,
        "upload_s": wall,
        "mib_s": tar.stat().st_size / 2**20 / wall,
    }
