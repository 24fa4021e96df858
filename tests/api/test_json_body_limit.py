"""JSON bodies are capped (413) as they arrive — with a Content-Length, with one that
lies, and chunked — and nothing is created; the upload route keeps its own limit."""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from typing import Any

import pytest

from service.config import get_settings
from tests.api.live import read_reply, send_chunked, stored
from tests.conftest import auth

LIMIT = get_settings().max_json_body_bytes


@pytest.fixture(scope="module")
def document_id(client: Any, api_key: str) -> str:
    resp = client.post(
        "/v1/documents",
        headers=auth(api_key),
        files={"file": ("note.txt", f"A short note {uuid.uuid4()}.\n".encode(), "text/plain")},
    )
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _job_body(document_id: str, size: int) -> bytes:
    """A valid job request padded with JSON whitespace to `size` bytes: only its size
    can be held against it."""
    core = json.dumps(
        {"document_id": document_id, "task": "summarize", "params": {"focus": str(uuid.uuid4())}}
    ).encode()
    assert size >= len(core)
    return core[:-1] + b" " * (size - len(core)) + b"}"


def _head(key: str, extra: str) -> bytes:
    return (
        "POST /v1/jobs HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Authorization: {auth(key)['Authorization']}\r\n"
        "Content-Type: application/json\r\n" + extra + "\r\n"
    ).encode()


def _refused(reply: bytes) -> None:
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert f"limit of {LIMIT} bytes".encode() in reply, reply[-300:]


def test_under_the_limit_is_accepted(client: Any, api_key: str, document_id: str) -> None:
    resp = client.post(
        "/v1/jobs",
        headers={**auth(api_key), "Content-Type": "application/json"},
        content=_job_body(document_id, LIMIT - 1024),
    )
    assert resp.status_code == 202, resp.text


def test_over_the_limit_in_process(client: Any, api_key: str, document_id: str) -> None:
    before = stored()
    resp = client.post(
        "/v1/jobs",
        headers={**auth(api_key), "Content-Type": "application/json"},
        content=_job_body(document_id, LIMIT + 1),
    )
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert error["code"] == "body_too_large" and f"limit of {LIMIT} bytes" in error["reason"]
    assert stored() == before


def test_over_the_limit_with_content_length(
    live_server: tuple[str, int], api_key: str, document_id: str
) -> None:
    before = stored()
    body = _job_body(document_id, 2 * LIMIT)
    with socket.create_connection(live_server, timeout=30) as s:
        # The server may answer, and close, before it has it all.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(_head(api_key, f"Content-Length: {len(body)}\r\n") + body)
        _refused(read_reply(s))
    assert stored() == before


def test_declared_length_over_the_limit_is_refused_unread(
    live_server: tuple[str, int], api_key: str
) -> None:
    """A Content-Length of 100 MiB and no body at all: answered at once, not awaited."""
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(_head(api_key, f"Content-Length: {100 * 2**20}\r\n"))
        _refused(read_reply(s))


def test_chunked_over_the_limit_is_cut_as_it_arrives(
    live_server: tuple[str, int], api_key: str, document_id: str
) -> None:
    """No Content-Length: the body is counted as it comes, and cut near the limit."""
    before = stored()
    offered = 256 * LIMIT
    head = _job_body(document_id, 200)[:-1]
    chunk = b" " * (64 * 1024)
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(_head(api_key, "Transfer-Encoding: chunked\r\n"))
        sent = send_chunked(s, head, chunk, offered)
        _refused(read_reply(s))
    # What sat in socket buffers when the server stopped reading is allowed for.
    assert sent < 32 * LIMIT, f"{sent} bytes went in before the server refused"
    assert stored() == before


def test_uploads_keep_their_own_limit(client: Any, api_key: str) -> None:
    """A document larger than the JSON limit still uploads."""
    text = (f"{uuid.uuid4()} " + "words of a long document " * 8 + "\n") * (3 * LIMIT // 200)
    assert len(text) > 2 * LIMIT
    resp = client.post(
        "/v1/documents", headers=auth(api_key), files={"file": ("long.txt", text.encode())}
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["size_bytes"] == len(text.encode())
