"""The blob store under races and crashes: originals shared across tenants, durable
renames, abandoned temp files. Real Postgres, Redis and a Celery worker."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service.blobstore import BlobStore
from service.config import get_settings
from service.db import get_sessionmaker
from service.documents import BLOB_LOCKS
from tests.api.test_documents import settled
from tests.conftest import auth, wait_for

pytestmark = pytest.mark.usefixtures("worker")


def _store() -> BlobStore:
    return BlobStore(get_settings().blobs)


def _body() -> bytes:
    return f"shared bytes {uuid.uuid4()}\n".encode() * 50


def _post(client: Any, key: str, body: bytes) -> Any:
    return client.post("/v1/documents", headers=auth(key), files={"file": ("s.txt", body)})


def _blob_lock_waiters() -> int:
    # Uploads blocked on an original's lock (service.documents.lock_blob), this database only.
    with get_sessionmaker()() as s:
        return int(
            s.scalar(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND classid = :locks AND database ="
                    " (SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"locks": BLOB_LOCKS},
            )
            or 0
        )


def test_delete_racing_an_upload_of_the_same_bytes_keeps_the_other_tenants_blob(
    client: Any, api_key: str, other_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = _body()
    mine = settled(client, api_key, _post(client, api_key, body).json()["id"])
    assert mine["status"] == "parsed", mine
    original = _store().original(mine["sha256"])
    assert original.is_file()

    # Gate the delete after it has found no other document with these bytes, just
    # before it takes the original away (unlinks it, or moves it aside to unlink).
    checked, go_on = threading.Event(), threading.Event()

    def gated(real: Any) -> Any:
        def wrapper(self: BlobStore, path: Path) -> Any:
            if path == original:
                checked.set()
                assert go_on.wait(120), "the test never let the delete go on"
            return real(self, path)

        return wrapper

    monkeypatch.setattr(BlobStore, "delete", gated(BlobStore.delete))
    if hasattr(BlobStore, "retire"):
        monkeypatch.setattr(BlobStore, "retire", gated(BlobStore.retire))

    out: dict[str, Any] = {}
    url = f"/v1/documents/{mine['id']}"
    deleter = threading.Thread(
        target=lambda: out.update(d=client.delete(url, headers=auth(api_key)))
    )
    deleter.start()
    assert checked.wait(60), "the delete never reached its unlink"
    uploader = threading.Thread(target=lambda: out.update(u=_post(client, other_key, body)))
    uploader.start()
    # The other tenant's upload either completes meanwhile (it links the file and
    # inserts its row) or waits for the delete to finish: then let the delete go on.
    wait_for(lambda: not uploader.is_alive() or _blob_lock_waiters() > 0, timeout=60)
    upload_waited = uploader.is_alive()
    go_on.set()
    deleter.join(120)
    uploader.join(120)
    assert out["d"].status_code == 204, out["d"].text
    assert out["u"].status_code == 202, out["u"].text
    theirs = out["u"].json()

    assert original.is_file(), "the other tenant's new document lost its original"
    assert original.read_bytes() == body
    parsed = settled(client, other_key, theirs["id"])
    assert parsed["status"] == "parsed", parsed
    assert upload_waited, "the upload should have waited for the delete's lock"


def test_committed_blob_is_fsynced_before_and_after_its_rename(
    client: Any, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store()
    root = str(store.root.resolve())
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(root):
            events.append(("fsync", path))
        real_fsync(fd)

    def replace(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        if str(Path(dst).resolve()).startswith(root):
            events.append(("replace", f"{Path(src).resolve()} -> {Path(dst).resolve()}"))
        real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    body = _body()
    resp = _post(client, api_key, body)
    assert resp.status_code == 202, resp.text
    monkeypatch.undo()

    dest = store.original(resp.json()["sha256"]).resolve()
    assert dest.read_bytes() == body
    renames = [i for i, (kind, what) in enumerate(events) if kind == "replace"]
    assert len(renames) == 1 and events[renames[0]][1].endswith(f" -> {dest}"), events
    tmp = events[renames[0]][1].split(" -> ")[0]
    assert not Path(tmp).exists()
    before = [what for kind, what in events[: renames[0]] if kind == "fsync"]
    after = [what for kind, what in events[renames[0] + 1 :] if kind == "fsync"]
    assert tmp in before, events  # the bytes are on disk before the name points at them
    assert str(dest.parent) in after, events  # and the new name itself is on disk


def test_sweeper_removes_abandoned_temp_files_only(database: str) -> None:
    settings = get_settings()
    store = _store()
    store.ensure()
    age = settings.temp_upload_max_age_s
    fresh = store.tmp / f"up-running-{uuid.uuid4().hex}"
    fresh.write_bytes(b"an upload in progress")
    os.utime(fresh, (time.time() - age / 2,) * 2)

    def abandoned(prefix: str) -> Path:
        path = store.tmp / f"{prefix}{uuid.uuid4().hex}"
        path.write_bytes(b"left by a crash")
        os.utime(path, (time.time() - age - 60,) * 2)
        return path

    # The worker's sweeper runs every SWEEP_INTERVAL_S (1 s in tests). The second
    # file is made after the first is gone, so its sweep listed `fresh` too.
    for prefix in ("up-", "retired-"):
        old = abandoned(prefix)
        wait_for(lambda: not old.exists(), timeout=60)  # noqa: B023 - waited on at once
    assert fresh.read_bytes() == b"an upload in progress"
    fresh.unlink()


def test_upload_cancelled_mid_body_leaves_no_temp_file(tmp_path: Path) -> None:
    """The server cancels a handler (shutdown, a dropped connection under some
    servers) while the body streams in: CancelledError is no Exception, and the
    half-written temp file must go all the same."""
    import asyncio

    from starlette.requests import Request

    from service.api.upload import receive_file

    store = BlobStore(tmp_path)
    part = b'--b0und\r\nContent-Disposition: form-data; name="file"; filename="x.txt"\r\n\r\n'
    chunks = [part + b"x" * 4096]

    async def receive() -> dict[str, Any]:
        if chunks:
            return {"type": "http.request", "body": chunks.pop(), "more_body": True}
        assert [p.stat().st_size for p in store.tmp.iterdir()] == [4096]
        raise asyncio.CancelledError

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/documents",
        "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b0und")],
    }
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(receive_file(Request(scope, receive), store, 1 << 20))
    assert list(store.tmp.iterdir()) == []
