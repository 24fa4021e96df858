"""`longdoc serve` with no configuration: SQLite, the SQLite-backed Celery transport,
a real worker process, a key printed on first start — the README's first command."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from tests.conftest import REPO, corpus_file, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_embedded_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGDOC_")}
    env["LONGDOC_CACHE_DIR"] = os.environ.get(
        "LONGDOC_CACHE_DIR", str(Path.home() / ".cache" / "longdoc")
    )
    data = tmp_path / "data"
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    longdoc = [sys.executable, "-m", "service.cli"]
    proc = subprocess.Popen(
        [*longdoc, "--data-dir", str(data), "serve", "--port", str(port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    family: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return proc.poll() is not None and _fail(tmp_path)

        wait_for(up, timeout=90, interval=0.5)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("celery" in " ".join(p.cmdline()) for p in family), "no worker process"
        key = re.search(r"ld_[\w-]{20,}", (tmp_path / "serve.log").read_text())
        assert key, (tmp_path / "serve.log").read_text()
        headers = {"Authorization": f"Bearer {key.group(0)}"}

        # A second key from the CLI reaches the same database through --data-dir.
        second = subprocess.run(
            [*longdoc, "--data-dir", str(data), "keys", "create", "--tenant", "default"],
            cwd=REPO, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        other = {"Authorization": f"Bearer {second.stdout.strip()}"}

        path = corpus_file("pdf/r-data.pdf")
        with httpx.Client(base_url=base, timeout=60) as http:
            resp = http.post("/v1/documents", headers=headers, files={"file": path.open("rb")})
            assert resp.status_code == 202, resp.text
            doc_id = resp.json()["id"]
            doc = wait_for(
                lambda: (
                    (d := http.get(f"/v1/documents/{doc_id}", headers=other).json())["status"]
                    in ("parsed", "failed")
                    and d
                ),
                timeout=120,
            )
            assert doc["status"] == "parsed", doc
            # It went through the SQLite database and the SQLite broker under --data-dir.
            assert (data / "longdoc.db").is_file() and (data / "broker.db").is_file()
            assert doc["page_count"] == 41
            assert all(tc["exact"] for tc in doc["token_counts"].values())
            text = http.get(f"/v1/documents/{doc_id}/text?pages=2", headers=headers).json()
            assert text["pages"][0]["number"] == 2 and len(text["pages"][0]["text"]) > 100
    finally:
        # Stop only `serve`; it must take its worker down with it.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(family, timeout=30)
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not alive, alive


def _fail(tmp_path: Path) -> bool:
    raise AssertionError("longdoc serve exited:\n" + (tmp_path / "serve.log").read_text())
