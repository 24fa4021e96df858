"""The Files API (purpose `batch`) driven by the official `openai` SDK, unchanged,
against a real uvicorn server: a Longdoc key as its api_key, Longdoc's /v1 as its
base_url. What the SDK raises (by status code) is what clients branch on."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest
from sqlalchemy import func, select

from service.config import get_settings
from service.db import get_sessionmaker
from service.models import File
from tests.api.conftest import sdk
from tests.api.live import blob_tmp_files, read_reply, send_chunked
from tests.conftest import api_settings, auth, corpus_file

MiB = 1024 * 1024


def request_file(lines: int, offset: int = 0) -> bytes:
    """A Batch API request file whose prompts are real lines of the Debian policy."""
    text = corpus_file("text/debian-policy.txt").read_text(encoding="utf-8")
    prose = [line.strip() for line in text.splitlines() if len(line.strip()) > 40]
    out = []
    for i, line in enumerate(prose[offset : offset + lines]):
        body = {"model": "auto", "messages": [{"role": "user", "content": line}]}
        req = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        out.append(json.dumps(req, ensure_ascii=False))
    assert len(out) == lines
    return ("\n".join(out) + "\n").encode()


def file_rows() -> int:
    with get_sessionmaker()() as session:
        return session.scalar(select(func.count()).select_from(File)) or 0


def test_create_retrieve_content_and_delete(ours: openai.OpenAI) -> None:
    data = request_file(50)
    made = ours.files.create(file=("requests.jsonl", data), purpose="batch")
    assert made.id.startswith("file-") and len(made.id) == 37
    assert (made.object, made.purpose, made.status) == ("file", "batch", "processed")
    assert (made.bytes, made.filename) == (len(data), "requests.jsonl")
    assert made.expires_at is None

    got = ours.files.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    assert ours.files.content(made.id).content == data  # byte for byte

    deleted = ours.files.delete(made.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (made.id, "file", True)
    for call in (ours.files.retrieve, ours.files.content, ours.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(made.id)


def test_a_deleted_files_bytes_leave_the_blob_store(ours: openai.OpenAI) -> None:
    made = ours.files.create(file=("r.jsonl", request_file(3)), purpose="batch")
    blobs = get_settings().blobs / "files"
    assert (blobs / str(uuid.UUID(made.id.removeprefix("file-")))).is_file()
    ours.files.delete(made.id)
    assert not (blobs / str(uuid.UUID(made.id.removeprefix("file-")))).exists()


def test_list_pages_with_a_cursor_in_both_orders(base: str) -> None:
    from service.db import get_sessionmaker
    from service.keys import create_key

    with get_sessionmaker()() as session:
        key = create_key(session, f"files-list-{uuid.uuid4().hex[:6]}")
    with sdk(base, key) as client:
        made = [
            client.files.create(file=(f"f{i}.jsonl", request_file(2, i)), purpose="batch").id
            for i in range(5)
        ]
        page = client.files.list(limit=2)
        assert [f.id for f in page.data] == made[::-1][:2]
        assert page.has_more is True
        # The SDK follows `after` = the last id itself, page by page.
        assert [f.id for f in client.files.list(limit=2)] == made[::-1]
        assert [f.id for f in client.files.list(limit=2, order="asc")] == made
        last = client.files.list(limit=2, after=made[1], order="desc")
        assert [f.id for f in last.data] == [made[0]] and last.has_more is False
        assert [f.id for f in client.files.list(purpose="batch_output")] == []
        raw = httpx.get(f"{base}/v1/files", headers=auth(key), params={"limit": 1}).json()
        assert raw["object"] == "list"
        assert raw["first_id"] == raw["last_id"] == made[-1]


def test_a_cursor_that_is_no_file_is_refused(ours: openai.OpenAI, base: str, api_key: str) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        ours.files.list(after="file-nothing")
    assert bad.value.code == "bad_cursor"
    unknown = f"file-{uuid.uuid4().hex}"
    resp = httpx.get(f"{base}/v1/files", headers=auth(api_key), params={"after": unknown})
    assert resp.status_code == 422 and resp.json()["error"]["field"] == "query.after"


def test_another_tenants_file_is_not_found(ours: openai.OpenAI, theirs: openai.OpenAI) -> None:
    made = ours.files.create(file=("mine.jsonl", request_file(4)), purpose="batch")
    for call in (theirs.files.retrieve, theirs.files.content, theirs.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(made.id)
    assert made.id not in {f.id for f in theirs.files.list()}
    assert ours.files.retrieve(made.id).id == made.id  # their delete touched nothing


@pytest.mark.parametrize("purpose", ["assistants", "fine-tune", "batch_output", ""])
def test_a_purpose_other_than_batch_is_422_and_stores_nothing(
    ours: openai.OpenAI, purpose: str
) -> None:
    before, temps = file_rows(), blob_tmp_files()
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        ours.files.create(file=("r.jsonl", request_file(2)), purpose=purpose)  # type: ignore[arg-type]
    body = refused.value.body
    assert isinstance(body, dict)
    assert (body["code"], body["field"]) == ("bad_purpose", "body.purpose")
    assert body["supported"] == ["batch"]
    assert (file_rows(), blob_tmp_files()) == (before, temps)


def test_no_purpose_is_422_naming_the_field(base: str, api_key: str) -> None:
    resp = httpx.post(
        f"{base}/v1/files", headers=auth(api_key), files={"file": ("r.jsonl", request_file(1))}
    )
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "body.purpose"


def test_an_empty_file_is_422(ours: openai.OpenAI) -> None:
    before = file_rows()
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        ours.files.create(file=("empty.jsonl", b""), purpose="batch")
    assert refused.value.code == "empty_file"
    assert file_rows() == before


def test_over_the_size_limit_is_413_naming_it(ours: openai.OpenAI) -> None:
    data = request_file(40)
    limit = len(data) - 1
    before, temps = file_rows(), blob_tmp_files()
    with api_settings(get_settings().model_copy(update={"max_batch_file_bytes": limit})):
        with pytest.raises(openai.APIStatusError) as refused:
            ours.files.create(file=("big.jsonl", data), purpose="batch")
        assert refused.value.status_code == 413
        assert refused.value.code == "upload_too_large"
        body = refused.value.body
        assert isinstance(body, dict) and f"limit of {limit} bytes" in body["reason"]
        # Exactly at the limit is taken.
        fits = ours.files.create(file=("fits.jsonl", data[:limit]), purpose="batch")
    assert fits.bytes == limit
    assert (file_rows(), blob_tmp_files()) == (before + 1, temps)


def test_a_hostile_filename_is_sanitized(ours: openai.OpenAI, base: str, api_key: str) -> None:
    # Through the SDK (httpx escapes some characters itself) and as raw bytes.
    made = ours.files.create(file=("../../etc/\x1b[31mpasswd\t.jsonl", b"{}\n"), purpose="batch")
    assert "/" not in made.filename and ".." not in made.filename
    assert all(ch.isprintable() for ch in made.filename)
    assert made.filename.endswith(".jsonl")
    boundary = "b0undary"
    raw = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="..\\\\..\\\\evil\x07\x00\x1b.jsonl"\r\n\r\n{}\n\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    resp = httpx.post(
        f"{base}/v1/files",
        headers={**auth(api_key), "Content-Type": f"multipart/form-data; boundary={boundary}"},
        content=raw,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["filename"] == "evil.jsonl"
    assert ours.files.content(resp.json()["id"]).content == b"{}\n"


MALFORMED = ["nothing", "file-", "file-xyz", f"file-{'g' * 32}", uuid.uuid4().hex, "file-0" * 7]


@pytest.mark.parametrize("bad", MALFORMED)
def test_a_malformed_id_is_404(ours: openai.OpenAI, bad: str) -> None:
    for call in (ours.files.retrieve, ours.files.content, ours.files.delete):
        with pytest.raises(openai.NotFoundError) as missing:
            call(bad)
        assert missing.value.code == "not_found"


# The SDK in a process of its own: the server runs in this one, whose memory is measured.
_CLIENT = """
import sys, openai
base, key, mode, path = sys.argv[1:]
c = openai.OpenAI(api_key=key, base_url=base + "/v1", max_retries=0, timeout=600)
if mode == "up":
    with open(path, "rb") as f:
        print(c.files.create(file=("big.jsonl", f), purpose="batch").id)
else:
    with c.files.with_streaming_response.content(path) as r:
        print(sum(len(b) for b in r.iter_bytes()))
"""


class PeakRss:
    """This process's resident memory, sampled while the block runs."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def grew(self) -> int:
        return self.peak - self.base


def _client(base: str, key: str, mode: str, arg: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _CLIENT, base, key, mode, arg],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_large_file_streams_in_and_out_in_flat_memory(
    tmp_path: Path, base: str, api_key: str, ours: openai.OpenAI
) -> None:
    path = tmp_path / "big.jsonl"
    block = request_file(200)
    with path.open("wb") as f:
        while f.tell() < 48 * MiB:
            f.write(block)
    size = path.stat().st_size
    with PeakRss() as up:
        file_id = _client(base, api_key, "up", str(path))
    assert ours.files.retrieve(file_id).bytes == size
    with PeakRss() as down:
        assert int(_client(base, api_key, "down", file_id)) == size
    # Streamed: the server holds a chunk at a time, not the 48 MiB.
    assert up.grew < 16 * MiB, up.grew
    assert down.grew < 16 * MiB, down.grew
    ours.files.delete(file_id)


def test_a_bad_purpose_sent_first_is_refused_before_the_file_arrives(
    live_server: tuple[str, int], api_key: str
) -> None:
    """The SDK sends `purpose` before `file`: a refused purpose is answered at once,
    not after the whole file has been read (here 1 GiB is offered)."""
    total = 1024 * MiB
    head = (
        "POST /v1/files HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: {auth(api_key)['Authorization']}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    first = (
        b'--XyZ\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="r.jsonl"\r\n\r\n'
    )
    temps = blob_tmp_files()
    with socket.create_connection(live_server, timeout=30) as s:
        s.sendall(head)
        sent = send_chunked(s, first, request_file(100), total)
        reply = read_reply(s)
    assert reply.startswith(b"HTTP/1.1 422"), reply[:300]
    assert b'"bad_purpose"' in reply
    assert sent < 64 * MiB, f"the server read {sent} bytes before refusing"
    assert blob_tmp_files() == temps
