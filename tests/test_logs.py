"""Log lines (service/logs.py) from real processes: JSON off a terminal, text on one
(a real pty), a traceback inside one line's `exc`, and the API's line per request
carrying the id its response header gave. No database, broker or worker: the API
runs with its database on a closed port, which also makes a real 500."""

from __future__ import annotations

import json
import logging
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load_support import free_port
from service import logs
from service.periodic import heartbeat
from tests.conftest import REPO
from tests.waiting import wait_for

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

_CHILD = """
import logging
from service import logs
from service.config import get_settings
logs.setup_logging(get_settings())
log = logging.getLogger("longdoc.test")
with logs.bound(document_id="doc-1", job_id="job-1"):
    log.warning("plain %s", "line")
    try:
        {}["missing"]
    except KeyError:
        log.exception("it broke")
"""


def _child_env(**env: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **env}


def _run_child(stderr: Any, **env: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", _CHILD]
    return subprocess.Popen(argv, cwd=REPO, env=_child_env(**env), stderr=stderr)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_off_a_terminal_each_line_is_one_json_object_with_its_ids() -> None:
    proc = _run_child(subprocess.PIPE, LONGDOC_LOG_FORMAT="auto")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    plain, broke = _json_lines(err.decode())  # the traceback split no line off
    assert RFC3339_UTC.match(plain["ts"]), plain
    assert plain["level"] == "WARNING" and plain["logger"] == "longdoc.test"
    assert plain["message"] == "plain line" and "exc" not in plain
    assert (plain["document_id"], plain["job_id"]) == ("doc-1", "job-1")
    assert broke["message"] == "it broke" and broke["level"] == "ERROR"
    assert broke["exc"].startswith("Traceback (most recent call last):")
    assert "KeyError: 'missing'" in broke["exc"] and broke["document_id"] == "doc-1"


def _on_a_pty(**env: str) -> str:
    leader, follower = pty.openpty()
    proc = _run_child(follower, **env)
    os.close(follower)
    out = b""
    try:
        while chunk := os.read(leader, 4096):
            out += chunk
    except OSError:  # EIO: the child closed its end
        pass
    finally:
        os.close(leader)
    assert proc.wait(timeout=60) == 0, out.decode()
    return out.decode().replace("\r\n", "\n")


def test_on_a_terminal_lines_are_text_unless_the_setting_says_json() -> None:
    text = _on_a_pty(LONGDOC_LOG_FORMAT="auto")
    first = text.splitlines()[0]
    stamp, rest = first.split(" ", 1)
    assert RFC3339_UTC.match(stamp) and rest.startswith("WARNING longdoc.test: "), first
    assert first.endswith("plain line document_id=doc-1 job_id=job-1"), first
    assert "Traceback (most recent call last):" in text and not text.startswith("{")
    forced = _on_a_pty(LONGDOC_LOG_FORMAT="json")
    assert [line["message"] for line in _json_lines(forced)] == ["plain line", "it broke"]


def test_only_log_ids_can_be_bound() -> None:
    with pytest.raises(ValueError, match="tenant_id"):
        logs.bind(tenant_id="t-1")
    assert "tenant_id" not in logs.current_ids()


def test_a_heartbeat_thread_has_the_ids_of_the_task_that_started_it() -> None:
    seen: list[dict[str, str]] = []
    beat = threading.Event()

    def record() -> bool:
        seen.append(logs.current_ids())
        beat.set()
        return False  # one beat is enough

    # What this thread has bound already (a task body run in-process by an earlier test,
    # `drive`, keeps what it bound: in a worker, the task's end undoes it).
    ambient = logs.current_ids()
    with logs.bound(document_id="doc-2"):
        scheduler = heartbeat("test beat", 0.01, record, logging.getLogger(__name__))
    with scheduler:
        wait_for(beat.is_set, timeout=10, interval=0.01)
    assert seen == [{**ambient, "document_id": "doc-2"}]
    assert logs.current_ids() == ambient


@contextmanager
def _api(log: Path) -> Iterator[str]:
    """The API as `longdoc serve` starts it, its database on a port nobody listens on."""
    port = free_port()
    env = _child_env(
        LONGDOC_DATABASE_URL=f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none",
        LONGDOC_LOG_FORMAT="auto",
    )
    argv = [sys.executable, "-m", "service.api.serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2, what="the API to answer /healthz")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_api_logs_one_json_line_per_request_with_the_id_it_answered(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    key = "ld_" + "k" * 40  # well-formed, so it is looked up: in a database that is away
    with _api(log) as url:
        given = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "edge-7f3a.1:b_c"})
        refused = httpx.get(f"{url}/healthz", headers={"X-Request-ID": "not an id; \x7f"})
        made = httpx.get(f"{url}/healthz")
        broken = httpx.get(f"{url}/v1/documents", headers={"Authorization": f"Bearer {key}"})
    assert given.headers["X-Request-ID"] == "edge-7f3a.1:b_c"
    for resp in (refused, made):
        assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"]), resp.headers
    assert refused.headers["X-Request-ID"] != made.headers["X-Request-ID"]
    assert broken.status_code == 500 and broken.json()["error"]["code"] == "internal_error"
    text = log.read_text()
    lines = _json_lines(text)  # every line of the process, uvicorn's own among them
    assert key not in text
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    for resp in (given, refused, made, broken):
        rid = resp.headers["X-Request-ID"]
        mine = [line for line in access if line.get("request_id") == rid]
        assert len(mine) == 1, (rid, access)
        assert mine[0]["path"] == resp.request.url.path
        assert mine[0]["status"] == resp.status_code and mine[0]["method"] == "GET"
    rid = broken.headers["X-Request-ID"]
    [error] = [line for line in lines if line["level"] == "ERROR"]
    assert error["request_id"] == rid and error["logger"] == "uvicorn.error"
    assert error["exc"].startswith("Traceback") and "OperationalError" in error["exc"]
