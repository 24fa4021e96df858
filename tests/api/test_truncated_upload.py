"""A multipart body that is complete at the HTTP level but stops before its closing
boundary holds only a prefix of the file: it is refused (400) and nothing is stored,
neither a row, nor a blob under the prefix's sha256, nor a temp file."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

import pytest

from tests.api.live import read_reply, sha_stored, stored
from tests.conftest import auth

BOUNDARY = "XyZ-cut"
PART_HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cut.pdf"\r\n'
    "Content-Type: application/pdf\r\n\r\n"
).encode()


def _file_bytes() -> bytes:
    # A real PDF header: the prefix alone would be taken for a PDF and stored.
    return b"%PDF-1.7\n" + os.urandom(200_000)


# Where the client stopped: mid-file; after the delimiter of a part that never comes;
# one byte short of the closing "--".
CUTS = {
    "mid_file": lambda data: PART_HEAD + data[: len(data) // 2],
    "after_delimiter": lambda data: PART_HEAD + data + f"\r\n--{BOUNDARY}\r\n".encode(),
    "before_final_dashes": lambda data: PART_HEAD + data + f"\r\n--{BOUNDARY}-".encode(),
}


def _prefix(body: bytes) -> bytes:
    """The bytes an accepting server would have stored as the file."""
    return body[len(PART_HEAD) :].split(b"\r\n--", 1)[0]


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_truncated_body_is_refused_in_process(client: Any, api_key: str, cut: str) -> None:
    body = CUTS[cut](_file_bytes())
    before = stored()
    resp = client.post(
        "/v1/documents",
        headers={**auth(api_key), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=body,
    )
    assert resp.status_code == 400, resp.text
    assert "closing boundary" in resp.json()["error"]["reason"]
    assert stored() == before
    assert not sha_stored(hashlib.sha256(_prefix(body)).hexdigest())


@pytest.mark.parametrize("cut", sorted(CUTS))
def test_truncated_body_is_refused_over_http(
    live_server: tuple[str, int], api_key: str, cut: str
) -> None:
    body = CUTS[cut](_file_bytes())
    before = stored()
    head = (
        "POST /v1/documents HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Authorization: {auth(api_key)['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(head + body)
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 400"), reply[:300]
    assert b"closing boundary" in reply
    assert stored() == before
    assert not sha_stored(hashlib.sha256(_prefix(body)).hexdigest())


def test_complete_body_is_still_stored(client: Any, api_key: str) -> None:
    """The same framing with its closing boundary is an ordinary upload."""
    data = _file_bytes()
    body = PART_HEAD + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    resp = client.post(
        "/v1/documents",
        headers={**auth(api_key), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=body,
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert resp.json()["size_bytes"] == len(data)
