"""`longdoc batch`, `longdoc batches` and `longdoc jobs` against a real API (uvicorn
over a socket), Postgres, Redis and a real Celery worker, without vLLM: a batch's jobs
fail once their documents are parsed (no backend), so it completes with failed
requests, whose error lines are what the output file gets. The commands run in this
process (typer's CliRunner) but for Ctrl-C, which is a real SIGINT to a subprocess.

The Ctrl-C test comes first and asks for no worker: with none running yet (the
module's starts with the first test that asks for it) its cancel finds the batch
unfinished."""

from __future__ import annotations

import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from service.cli.app import cli
from service.cli.packing import StreamReader, entries, tar_stream
from tests.api.conftest import live_server as live_server
from tests.conftest import REPO, _new_key, auth, corpus_file

SMALL = "pdf/latex-ltnews01.pdf"
runner = CliRunner()


@pytest.fixture(scope="module")
def api_key(database: str) -> str:
    """A tenant of this module's own: corpus files that other modules upload must not
    come back here as existing documents (dedup), nor this module's go there."""
    return _new_key(f"batch-cli-{uuid.uuid4().hex[:6]}")


def _base(server: tuple[str, int]) -> str:
    return f"http://{server[0]}:{server[1]}"


def run(server: tuple[str, int], key: str, *args: str) -> Any:
    return runner.invoke(cli, [*args, "--url", _base(server), "--key", key])


def get_batch(server: tuple[str, int], key: str, batch_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{_base(server)}/v1/batches/{batch_id}", headers=auth(key))
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def batch_id_of(stderr: str) -> str:
    line = next(x for x in stderr.splitlines() if x.startswith("batch batch_"))
    return line.split()[1]


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A directory of two real documents, a note of this run's own, a nested one and
    a symbolic link (left out: links are not followed)."""
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    shutil.copy(corpus_file(SMALL), root / "ltnews.pdf")
    (root / "note.txt").write_text(f"A note of run {uuid.uuid4().hex}.\n" * 20)
    (root / "sub" / "deeper.txt").write_text("Nested text, two levels down.\n" * 20)
    (root / "link.txt").symlink_to(root / "note.txt")
    return root


def _stderr_lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue[str], prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line {prefix!r} within {timeout} s; stderr: {''.join(seen)}")


def test_ctrl_c_leaves_the_batch_running(
    live_server: tuple[str, int], api_key: str, tmp_path: Path
) -> None:
    root = tmp_path / "interrupted"
    root.mkdir()
    (root / "only.txt").write_text(f"Interrupted run {uuid.uuid4().hex}.\n")
    out = tmp_path / "out.jsonl"
    # Polled once (the new batch is not final) and then not for an hour: whatever a
    # worker does meanwhile, the signal finds the command following the batch.
    argv = [sys.executable, "-m", "service.cli.app", "batch", str(root), "-o", str(out),
            "--interval", "3600", "--url", _base(live_server), "--key", api_key]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        lines = _stderr_lines(proc)
        batch_id = _wait_for_line(lines, "batch batch_", 120).split()[1]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    said = "".join(iter_queue(lines))
    assert f"batch {batch_id} goes on" in said
    assert f"longdoc batches {batch_id} --cancel" in said
    left = get_batch(live_server, api_key, batch_id)
    assert left["status"] not in ("cancelling", "cancelled") and left["cancelling_at"] is None

    # And cancelled on request, by the command it printed.
    cancelled = run(live_server, api_key, "batches", batch_id, "--cancel")
    assert cancelled.exit_code == 0, cancelled.output
    assert batch_id in cancelled.stdout and "cancel" in cancelled.stdout
    after = get_batch(live_server, api_key, batch_id)
    # In file order no worker has run yet, so it is unfinished and the cancel takes; a
    # worker of an earlier test (random order) may have ended it first, which it keeps.
    assert after["cancelling_at"] is not None or after["status"] == "completed"
    assert after["status"] in ("cancelling", "cancelled", "completed")


def iter_queue(lines: queue.Queue[str]) -> Iterator[str]:
    while True:
        try:
            yield lines.get_nowait()
        except queue.Empty:
            return


def test_a_directory_batch_writes_every_result_once_and_resumes(
    live_server: tuple[str, int], api_key: str, worker: Any, docs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    first = run(live_server, api_key, "batch", str(docs), "-o", str(out), "--interval", "0.2")
    batch_id = batch_id_of(first.stderr)
    done = get_batch(live_server, api_key, batch_id)
    assert done["status"] == "completed" and done["filename"] == "docs.tar"
    counts = done["request_counts"]
    assert first.exit_code == (0 if counts["completed"] == counts["total"] else 1), first.output
    assert "left out 1 links" in first.stderr
    written = lines_of(out)
    names = ["ltnews.pdf", "note.txt", "sub/deeper.txt"]
    assert sorted(x["custom_id"] for x in written) == names
    failed = [x for x in written if x["error"] is not None]
    assert len(failed) == counts["failed"]
    assert all(x["response"] is None and x["error"]["code"] for x in failed)
    assert "3 new lines" in first.stderr

    # The same directory again: the same bytes, so the same batch; nothing new to write.
    again = run(live_server, api_key, "batch", str(docs), "-o", str(out), "--interval", "0.2")
    assert again.exit_code == first.exit_code, again.output
    assert batch_id_of(again.stderr) == batch_id and "resuming" in again.stderr
    assert out.read_text().splitlines() == [json.dumps(x, separators=(",", ":")) for x in written]
    assert "0 new lines" in again.stderr

    # A file that lost its last line and has half of one: only that line comes back.
    text = out.read_text().splitlines(keepends=True)
    out.write_text("".join(text[:-1]) + text[-1][:10])
    third = run(live_server, api_key, "batch", str(docs), "-o", str(out))
    assert batch_id_of(third.stderr) == batch_id and "1 new lines" in third.stderr
    assert sorted(x["custom_id"] for x in lines_of(out)) == names


def test_an_archive_goes_up_as_it_is_and_batches_lists_and_shows_it(
    live_server: tuple[str, int], api_key: str, worker: Any, tmp_path: Path
) -> None:
    archive = tmp_path / "papers.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(corpus_file(SMALL), "a/ltnews.pdf")
        z.writestr("b/notes.txt", f"Notes of run {uuid.uuid4().hex}.\n" * 10)
    made = run(live_server, api_key, "batch", str(archive), "--interval", "0.2")
    batch_id = batch_id_of(made.stderr)
    # Without -o the results are stdout, one JSON line per request.
    printed = [json.loads(x) for x in made.stdout.splitlines()]
    assert sorted(x["custom_id"] for x in printed) == ["a/ltnews.pdf", "b/notes.txt"]

    listed = run(live_server, api_key, "batches")
    assert listed.exit_code == 0, listed.output
    assert listed.stdout.splitlines()[0].startswith(batch_id)  # newest first
    shown = run(live_server, api_key, "batches", batch_id)
    assert shown.exit_code == 0 and "papers.zip" in shown.stdout
    assert "requests   2:" in shown.stdout and "completed_at" in shown.stdout
    as_json = json.loads(run(live_server, api_key, "batches", batch_id, "--json").stdout)
    assert as_json == get_batch(live_server, api_key, batch_id)
    whole = json.loads(run(live_server, api_key, "batches", "--json", "--limit", "1").stdout)
    assert [b["id"] for b in whole["data"]] == [batch_id]
    assert whole["has_more"] == (len(listed.stdout.splitlines()) > 1)

    missing = run(live_server, api_key, "batches", "batch_" + "0" * 32)
    assert missing.exit_code == 2 and "404" in missing.stderr


def test_jobs_lists_and_shows_the_tenant_jobs(
    live_server: tuple[str, int], api_key: str, other_key: str, worker: Any, tmp_path: Path
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "job.txt").write_text(f"One job of run {uuid.uuid4().hex}.\n" * 10)
    made = run(live_server, api_key, "batch", str(tmp_path / "one"), "--task", "prompt",
               "--params", '{"instruction": "Say hi."}', "--interval", "0.2")  # fmt: skip
    assert made.exit_code in (0, 1) and json.loads(made.stdout)["custom_id"] == "job.txt"
    listed = json.loads(run(live_server, api_key, "jobs", "--json", "--limit", "100").stdout)
    assert listed["items"] and listed["items"][0]["task"] == "prompt"  # newest first
    plain = run(live_server, api_key, "jobs", "--limit", "100")
    assert plain.exit_code == 0
    assert [x.split()[0] for x in plain.stdout.splitlines()] == [j["id"] for j in listed["items"]]
    one = listed["items"][0]
    shown = run(live_server, api_key, "jobs", one["id"])
    assert shown.exit_code == 0 and f"job        {one['id']}" in shown.stdout
    assert one["status"] in shown.stdout
    assert json.loads(run(live_server, api_key, "jobs", one["id"], "--json").stdout) == one
    # Another tenant's job is not found.
    hidden = run(live_server, other_key, "jobs", one["id"])
    assert hidden.exit_code == 2 and "404" in hidden.stderr
    failed = run(live_server, api_key, "jobs", "--status", "no-such-status")
    assert failed.exit_code == 2 and "422" in failed.stderr


def test_bad_paths_and_no_server_are_clear_errors(tmp_path: Path) -> None:
    url = ["--url", "http://127.0.0.1:9", "--key", "k"]  # nothing listens on port 9
    gone = runner.invoke(cli, ["batch", str(tmp_path / "nope"), *url])
    assert gone.exit_code == 2 and "nope: no such file or directory" in gone.stderr
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "loop").symlink_to(empty)
    none = runner.invoke(cli, ["batch", str(empty), *url])
    assert none.exit_code == 2 and "no files in the directory" in none.stderr
    down = runner.invoke(cli, ["batches", *url])
    assert down.exit_code == 2 and "cannot reach" in down.stderr
    cancel_all = runner.invoke(cli, ["batches", "--cancel", *url])
    assert cancel_all.exit_code == 2 and "needs a batch ID" in cancel_all.output


def test_a_directory_packs_to_the_same_tar_every_time(docs: Path) -> None:
    found, skipped = entries(docs)
    assert [e.name for e in found] == ["ltnews.pdf", "note.txt", "sub/deeper.txt"]
    assert skipped == 1
    first = b"".join(tar_stream(found))
    (docs / "note.txt").touch()  # a new mtime changes nothing in the tar
    assert b"".join(tar_stream(entries(docs)[0])) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [e.name for e in found]
        assert {(m.mtime, m.uid, m.gid, m.mode) for m in members} == {(0, 0, 0, 0o644)}
        read = tar.extractfile("ltnews.pdf")
        assert read is not None and read.read() == (docs / "ltnews.pdf").read_bytes()


def test_a_directory_upload_is_sent_chunked_as_it_is_packed(docs: Path) -> None:
    """No length known up front, so httpx cannot have read the tar whole: it goes out
    chunked, piece by piece as the reader is read."""
    pieces = tar_stream(entries(docs)[0])
    reader: Any = StreamReader(pieces)
    files = {"file": ("docs.tar", reader, "application/x-tar")}
    request = httpx.Client().build_request("POST", "http://x/v1/batches/archive", files=files)
    assert request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in request.headers
    body = b"".join(request.stream)  # type: ignore[union-attr]
    assert body.count(b"ltnews.pdf") >= 1 and next(pieces, None) is None


def test_ocr_options_go_to_the_server_which_checks_them_before_the_archive(
    live_server: tuple[str, int], api_key: str, docs: Path
) -> None:
    def batches() -> list[str]:
        url = f"{_base(live_server)}/v1/batches?limit=100"
        return [b["id"] for b in httpx.get(url, headers=auth(api_key)).json()["data"]]

    before = batches()
    bad = run(live_server, api_key, "batch", str(docs), "--ocr-languages", "xyz")
    assert bad.exit_code == 2 and "422" in bad.stderr and "xyz" in bad.stderr, bad.stderr
    off = run(live_server, api_key, "batch", str(docs), "--ocr", "off", "--ocr-languages", "eng")
    assert off.exit_code == 2 and "ocr=off" in off.stderr, off.stderr
    unknown = run(live_server, api_key, "batch", str(docs), "--ocr", "sometimes")
    assert unknown.exit_code == 2 and "sometimes" in unknown.output
    assert batches() == before  # refused before any batch was made
