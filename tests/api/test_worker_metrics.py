"""A worker's own metrics port: the pool's children count parses into the
multiprocess directory, and the main process serves the sum at each scrape, also of
children that have exited."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import _new_key, auth, corpus_file, start_worker, stop_worker, wait_for

# Two small PDFs of different pages, so the sum shows both parses wherever they ran.
PDFS = ("pdf/us-va-form-21-0966.pdf", "pdf/latex-ltnews01.pdf")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> str | None:
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    except httpx.TransportError:
        return None  # not listening yet
    return resp.text if resp.status_code == 200 else None


def _values(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {
        frozenset(s.labels.items()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_worker_serves_parse_pages_summed_over_its_pool(
    tmp_path: Path, client: Any, database: str, broker: Any
) -> None:
    port = _free_port()
    env = {"LONGDOC_WORKER_METRICS_PORT": str(port)}
    # Each child exits after one task, so the parses run in two children that are gone
    # by the scrape: their counts must outlive them (mark_process_dead keeps counters).
    args = ("--max-tasks-per-child", "1")
    proc = start_worker(tmp_path / "worker.log", concurrency=2, env=env, args=args)
    try:
        # An empty page is an answer too (nothing counted yet): wait for any 200.
        wait_for(lambda: _scrape(port) is not None, timeout=120, what="the metrics port")
        first = _scrape(port)
        assert first is not None
        # A fresh directory: nothing counted before this worker parsed anything.
        assert _values(first, "longdoc_parse_pages_total") == {}
        key = _new_key(f"metrics-{uuid.uuid4().hex[:6]}")  # a tenant with no uploads yet
        ids = []
        for rel in PDFS:
            with corpus_file(rel).open("rb") as f:
                resp = client.post("/v1/documents", headers=auth(key), files={"file": (rel, f)})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])

        def parsed(doc_id: str) -> dict[str, Any] | None:
            body: dict[str, Any] = client.get(f"/v1/documents/{doc_id}", headers=auth(key)).json()
            return body if body["status"] in ("parsed", "failed") else None

        docs = [wait_for(lambda d=d: parsed(d), timeout=300) for d in ids]
        assert [d["status"] for d in docs] == ["parsed", "parsed"], docs
        pages = sum(d["page_count"] for d in docs)
        text = _scrape(port)
        assert text is not None
        counted = _values(text, "longdoc_parse_pages_total")
        assert counted == {frozenset({("media_type", "application/pdf")}): pages}
        runs = _values(text, "longdoc_parse_seconds_count")
        assert runs[frozenset({("media_type", "application/pdf"), ("outcome", "parsed")})] == 2
        for doc in docs:
            assert doc["id"] not in text
    finally:
        stop_worker(proc)


@pytest.mark.parametrize("port", ["-1", "70000"])
def test_a_port_out_of_range_is_refused(port: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from service.config import Settings

    monkeypatch.setenv("LONGDOC_WORKER_METRICS_PORT", port)
    with pytest.raises(ValidationError, match="worker_metrics_port"):
        Settings()
