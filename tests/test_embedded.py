"""`longdoc serve` with no configuration: SQLite, the SQLite-backed Celery transport,
a real worker process, a key printed on first start, and a real vLLM CPU server on
SmolLM2 135M — the README's first command — then `longdoc submit` against it.

The environment of tests/conftest.py (Postgres, Redis) is removed for `serve`, so the
embedded defaults apply. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from ingestion.tasks.repetition import find_loop
from service.backends import embedded as embedded_vllm
from service.config import Settings
from tests.conftest import CACHE, REPO, corpus_file, wait_for
from tests.prereq import require

LONGDOC = [sys.executable, "-m", "service.cli.app"]
# One page, ~3,700 characters: with the prompt and 64 output tokens well inside the
# embedded server's 8,192-token context, so the plan is a single request.
SMALL_PDF = "pdf/latex-ltnews01.pdf"
STYLE_GUIDE = "pdf/latex3-styleguide.pdf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _embedded_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LONGDOC_")}
    env["LONGDOC_CACHE_DIR"] = str(CACHE)
    return env


@contextmanager
def _serve(
    tmp_path: Path, argv: list[str], ready_timeout: float
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`longdoc ARGV` (a serve) until /readyz answers; on exit, SIGTERM it and check
    that every process it started is gone."""
    log_path = tmp_path / "serve.log"
    port = _free_port()
    proc = subprocess.Popen(
        [*LONGDOC, *argv, "--port", str(port)],
        cwd=REPO, env=_embedded_env(), stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    family: list[psutil.Process] = []
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                if proc.poll() is not None:
                    raise AssertionError("serve exited:\n" + log_path.read_text()) from None
                return False

        wait_for(up, timeout=ready_timeout, interval=0.5)
        family = psutil.Process(proc.pid).children(recursive=True)
        yield base, proc
    finally:
        # Stop only `serve`; it must take its worker (and vLLM) down with it.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(family, timeout=30)
    for p in alive:  # vLLM runs in a session of its own: killpg(serve) misses it
        p.kill()
    assert not alive, alive


def _settled(
    http: httpx.Client, doc_id: str, headers: dict[str, str], timeout: float
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        doc: dict[str, Any] = http.get(f"/v1/documents/{doc_id}", headers=headers).json()
        return doc if doc["status"] in ("parsed", "failed") else None

    return wait_for(done, timeout=timeout)


@pytest.mark.services  # `serve` runs a Celery worker of its own (on SQLite)
def test_serve_embedded_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # --no-vllm: parsing needs no model server, and this test needs no 40 s start.
    with _serve(tmp_path, ["--data-dir", str(data), "serve", "--no-vllm"], 90) as (base, proc):
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("celery" in " ".join(p.cmdline()) for p in family), "no worker process"
        assert not any("vllm" in " ".join(p.cmdline()) for p in family), "--no-vllm ignored"
        key = re.search(r"ld_[\w-]{20,}", (tmp_path / "serve.log").read_text())
        assert key, (tmp_path / "serve.log").read_text()
        headers = {"Authorization": f"Bearer {key.group(0)}"}
        # The key is also written, private, for `longdoc submit`.
        assert (data / "api-key").read_text().strip() == key.group(0)
        assert (data / "api-key").stat().st_mode & 0o777 == 0o600

        # A second key from the CLI reaches the same database through --data-dir.
        second = subprocess.run(
            [*LONGDOC, "--data-dir", str(data), "keys", "create", "--tenant", "default"],
            cwd=REPO, env=_embedded_env(), capture_output=True, text=True, check=True,
        )  # fmt: skip
        other = {"Authorization": f"Bearer {second.stdout.strip()}"}

        path = corpus_file("pdf/r-data.pdf")
        with httpx.Client(base_url=base, timeout=60) as http:
            resp = http.post("/v1/documents", headers=headers, files={"file": path.open("rb")})
            assert resp.status_code == 202, resp.text
            doc_id = resp.json()["id"]
            doc = _settled(http, doc_id, other, timeout=120)
            assert doc["status"] == "parsed", doc
            # It went through the SQLite database and the SQLite broker under --data-dir.
            assert (data / "longdoc.db").is_file() and (data / "broker.db").is_file()
            assert doc["page_count"] == 41
            assert all(tc["exact"] for tc in doc["token_counts"].values())
            text = http.get(f"/v1/documents/{doc_id}/text?pages=2", headers=headers).json()
            assert text["pages"][0]["number"] == 2 and len(text["pages"][0]["text"]) > 100

            # A scan of more pages than the ingest task OCRs itself: its slices go
            # through the SQLite broker and database too, and are joined.
            scan = corpus_file("pdf-scanned/ocrmypdf-multipage.pdf")
            with scan.open("rb") as f:
                resp = http.post("/v1/documents?ocr_languages=eng", headers=headers,
                                 files={"file": (scan.name, f)})  # fmt: skip
            assert resp.status_code == 202, resp.text
            scan_id = resp.json()["id"]
            scanned = _settled(http, scan_id, headers, timeout=600)
            assert scanned["status"] == "parsed", scanned
            assert scanned["progress"]["ocr_pages_done"] == 5, scanned
            ocr_pages = [w for w in scanned["warnings"] if w["warnings"][0].startswith("ocr: eng")]
            assert [w["page"] for w in ocr_pages] == [1, 2, 3, 5, 6], scanned["warnings"]


# vLLM's start (~40-60 s on two cores) and two jobs; more when other servers share the CPU.
@pytest.mark.vllm  # `serve` starts its own server: no fixture says so
@pytest.mark.timeout(1200)
def test_serve_with_embedded_vllm_then_submit(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    require(
        embedded_vllm.vllm_parts(CACHE) is not None,
        "vLLM venv or SmolLM2 model missing: run make vllm",
    )
    pdf = corpus_file(SMALL_PDF)
    # Short, so that vLLM's scratch (its sockets) goes under it, as on a real machine.
    data = Path(tempfile.mkdtemp(prefix="ld-"))
    request.addfinalizer(lambda: shutil.rmtree(data, ignore_errors=True))
    t0 = time.monotonic()
    with _serve(tmp_path, ["serve", "--data-dir", str(data)], 400) as (base, proc):
        ready_s = time.monotonic() - t0
        log = (tmp_path / "serve.log").read_text()
        assert "vLLM ready in" in log, log
        vllm = [
            p
            for p in psutil.Process(proc.pid).children(recursive=True)
            if "vllm" in " ".join(p.cmdline()) or p.name().startswith("VLLM")
        ]
        assert vllm, "no vLLM process"
        vllm_url = re.search(r"starting vLLM .* on (http://[\d.:]+)", log)
        assert vllm_url, log

        def submit(
            *extra: str, doc: Path = pdf, budget: int = 64
        ) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*LONGDOC, "submit", str(doc), "--task", "summarize",
                 "--max-output-tokens", str(budget), "--data-dir", str(data), "--url", base,
                 "--timeout", "300", *extra],
                cwd=REPO, env=_embedded_env(), capture_output=True, text=True, timeout=400,
            )  # fmt: skip

        t1 = time.monotonic()
        done = submit()
        job_s = time.monotonic() - t1
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.strip()) > 20, (done.stdout, done.stderr)
        assert f"running on {vllm_url.group(1)}" in done.stderr, done.stderr
        job_id = re.search(r"job ([0-9a-f-]{36})", done.stderr)
        assert job_id, done.stderr

        headers = {"Authorization": f"Bearer {(data / 'api-key').read_text().strip()}"}
        job = httpx.get(f"{base}/v1/jobs/{job_id.group(1)}", headers=headers, timeout=10).json()
        assert job["status"] == "succeeded", job
        assert job["backend"]["url"] == vllm_url.group(1), job
        assert job["plan"]["kind"] == "single", job["plan"]
        # SmolLM2 stands in for gemma: its tokens are counted by the server, not the file.
        doc = httpx.get(f"{base}/v1/documents/{job['document_id']}", headers=headers).json()
        gemma = doc["token_counts"]["gemma"]
        assert gemma["method"] == "server", doc["token_counts"]
        # ...and says so: the gemma role's count is SmolLM2's, not Gemma's.
        assert gemma["model"] == embedded_vllm.SERVED_NAME, doc["token_counts"]
        # The same bytes again (the upload answers 200), a second job, the whole JSON.
        again = submit("--json")
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        assert result["text"] and result["model"] == embedded_vllm.SERVED_NAME, result
        # The document a new user summarised (issue 9): greedy decoding said one sentence
        # 47 times. With the embedded server's sampling the first call is a real summary.
        guide = submit("--json", doc=corpus_file(STYLE_GUIDE), budget=200)
        assert guide.returncode == 0, guide.stderr
        summary = json.loads(guide.stdout)
        assert find_loop(summary["text"] + "\n") is None, summary["text"]
        assert not [w for w in summary["warnings"] if w.startswith("output_repetition")]
        assert summary["request_id"].endswith("-1-0-1"), summary["request_id"]  # no retry
        print(f"\nserve ready (vLLM included) in {ready_s:.0f} s; first job in {job_s:.1f} s")
    # _serve checked that serve's processes are gone; vLLM's own are its children too.
    assert not [p for p in vllm if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not list(data.glob("longdoc-vllm-*")), "vLLM scratch left behind"


def _submit_alone(*argv: str) -> subprocess.CompletedProcess[str]:
    """`longdoc submit ARGV` in this process (a usage error needs no server, and a
    process would spend its time importing), with the embedded environment."""
    from typer.testing import CliRunner

    from service.cli.app import cli

    # COLUMNS: wide enough that click's error box does not wrap the message.
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("LONGDOC_")}
    env.update(_embedded_env(), COLUMNS="500")
    done = CliRunner().invoke(cli, ["submit", *argv], env=env)
    if done.exception is not None and not isinstance(done.exception, SystemExit):
        raise done.exception
    return subprocess.CompletedProcess(argv, done.exit_code, done.stdout, done.stderr)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:{port}", "--key", "k"], "cannot reach http://127.0.0.1:"),
        (["--params", "{bad", "--key", "k"], "Invalid value for '--params'"),
        (["--params", "[1, 2]", "--key", "k"], "not a JSON object"),
        (["--params", "@{tmp}/none.json", "--key", "k"], "No such file"),
        (["--data-dir", "{tmp}/empty"], "no API key"),
    ],
)
def test_submit_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("some text\n")
    fill = {"{port}": str(_free_port()), "{tmp}": str(tmp_path)}
    for old, new in fill.items():
        args = [a.replace(old, new) for a in args]
    done = _submit_alone(str(doc), *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr, done.stderr


def test_submit_missing_file_exits_2(tmp_path: Path) -> None:
    done = _submit_alone(str(tmp_path / "nope.pdf"), "--key", "k")
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr


def test_no_vllm_parts_says_so_and_starts_nothing(tmp_path: Path) -> None:
    said: list[str] = []
    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path)
    assert embedded_vllm.start(settings, said.append) is None
    assert said == [embedded_vllm.MISSING]
