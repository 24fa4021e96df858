"""An upload over the limit is cut off as it streams, and nothing is stored.

Run against a real uvicorn server over a socket: the in-process test client would
buffer the body before the app saw it, which is exactly what must not happen.
"""

from __future__ import annotations

import socket

from service.config import get_settings
from tests.api.live import blob_tmp_files, read_reply, send_chunked
from tests.conftest import auth

LIMIT = 64 * 1024 * 1024  # set for the test run in conftest


def _head(key: str, extra: str) -> bytes:
    return (
        "POST /v1/documents HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: {auth(key)['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n" + extra + "\r\n"
    ).encode()


def test_chunked_upload_over_limit_is_cut(live_server: tuple[str, int], api_key: str) -> None:
    assert get_settings().max_upload_bytes == LIMIT
    before = blob_tmp_files()
    total = 16 * LIMIT  # 1 GiB offered; the server must stop us long before
    part = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n\r\n'
    chunk = b"%PDF" + b"\0" * (1024 * 1024 - 4)
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(_head(api_key, "Transfer-Encoding: chunked\r\n"))
        sent = send_chunked(s, part, chunk, total)
        s.settimeout(30)
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    # Cut near the limit: allow for what was already in flight in socket buffers.
    assert sent < 2 * LIMIT, f"server read {sent} bytes before refusing"
    assert blob_tmp_files() == before


def test_declared_length_over_limit_is_refused_before_reading(
    live_server: tuple[str, int], api_key: str
) -> None:
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(_head(api_key, f"Content-Length: {10 * LIMIT}\r\n"))
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"nothing was stored" in reply
