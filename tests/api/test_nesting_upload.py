"""A deeply nested HTML upload fails on its first attempt and kills no worker.

Before the depth check, MuPDF segfaulted on it: each attempt killed the worker's
child process, and the document ended `worker_lost` only after every attempt.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.api.test_documents import settled, upload
from tests.conftest import corpus_file, wait_for


def _children(worker: subprocess.Popen[bytes]) -> set[int]:
    return {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}


def _pool_of_one(worker: subprocess.Popen[bytes]) -> set[int] | None:
    children = _children(worker)
    return children if len(children) == 1 else None


@pytest.mark.timeout(600)
def test_deep_html_fails_once_and_the_worker_lives(
    client: Any, api_key: str, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    # One pool child (concurrency 1): a kept worker may still be replacing a child an
    # earlier module's test stopped, and two pids then would be a moment, not the pool.
    before = wait_for(lambda: _pool_of_one(worker), timeout=120)
    hostile = tmp_path / "deep.html"
    hostile.write_bytes(
        b"<html><body>" + b"<div>" * 5000 + b"x" + b"</div>" * 5000 + b"</body></html>"
    )
    resp = upload(client, api_key, hostile)
    assert resp.status_code == 202, resp.text
    doc = settled(client, api_key, resp.json()["id"], timeout=300)
    assert doc["status"] == "failed", doc
    assert doc["error"]["code"] == "too_deeply_nested", doc
    assert "1000" in doc["error"]["reason"]
    assert doc["attempts"] == 1

    assert worker.poll() is None
    assert _children(worker) == before  # the child that parsed it is the same process
    good = settled(
        client,
        api_key,
        upload(
            client, api_key, corpus_file("html/debian-handbook.advanced-administration.en.html")
        ).json()["id"],
        timeout=300,
    )
    assert good["status"] == "parsed" and good["page_count"] >= 1, good
    assert _children(worker) == before
