"""An upload over the limit is cut off as it streams, and nothing is stored.

Run against a real uvicorn server over a socket: the in-process test client would
buffer the body before the app saw it, which is exactly what must not happen.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from service.config import get_settings
from tests.conftest import auth

LIMIT = 64 * 1024 * 1024  # set for the test run in conftest


@pytest.fixture(scope="module")
def live_server(database: str, broker: Any) -> Iterator[tuple[str, int]]:
    from service.main import app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=10)


def _blob_tmp_files() -> list[str]:
    tmp = get_settings().blobs / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def _read_reply(s: socket.socket) -> bytes:
    """Status line, headers and the whole body (by Content-Length), however it arrives."""
    reply = b""
    try:
        while b"\r\n\r\n" not in reply and (data := s.recv(65536)):
            reply += data
        head, _, body = reply.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
             if line.startswith(b"content-length:")),
            0,
        )  # fmt: skip
        while len(body) < length and (data := s.recv(65536)):
            body += data
        return head + b"\r\n\r\n" + body
    except ConnectionResetError:
        return reply


def _head(key: str, extra: str) -> bytes:
    return (
        "POST /v1/documents HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: {auth(key)['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n" + extra + "\r\n"
    ).encode()


def test_chunked_upload_over_limit_is_cut(live_server: tuple[str, int], api_key: str) -> None:
    assert get_settings().max_upload_bytes == LIMIT
    before = _blob_tmp_files()
    total = 16 * LIMIT  # 1 GiB offered; the server must stop us long before
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n\r\n'
    chunk = b"%PDF" + b"\0" * (1024 * 1024 - 4)
    sent = 0
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(_head(api_key, "Transfer-Encoding: chunked\r\n"))
        s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        try:
            while sent < total:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if select.select([s], [], [], 0)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(30)
        reply = _read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # Cut near the limit: allow for what was already in flight in socket buffers.
    assert sent < 2 * LIMIT, f"server read {sent} bytes before refusing"
    assert _blob_tmp_files() == before


def test_declared_length_over_limit_is_refused_before_reading(
    live_server: tuple[str, int], api_key: str
) -> None:
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(_head(api_key, f"Content-Length: {10 * LIMIT}\r\n"))
        reply = _read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"nothing was stored" in reply
