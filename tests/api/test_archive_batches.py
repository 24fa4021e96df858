"""Archive batches end to end on the real services (Postgres, Redis, a real Celery
worker), without vLLM: entries become documents, items and jobs (the jobs cannot run
here, which is what lets a cancel find them unfinished), refused entries become
failed items with their reasons, whole-archive limits are refused before anything is
stored, and the batch object, its counts and its results follow."""

from __future__ import annotations

import hashlib
import json
import stat
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from service.batches import expansion, lifecycle
from service.batches.lifecycle import parse_id
from service.blobstore import BlobStore
from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.models import (
    Batch,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    Document,
    DocumentStatus,
    Job,
    utcnow,
)
from tests.conftest import _new_key, api_settings, auth, corpus_file, wait_for
from tests.hostile_archives import (
    tar_bytes,
    write_tar_gz_of_many,
    write_zip_of_many,
    write_zip_of_zeros,
    zip_bytes,
    zip_info,
)

SMALL = "pdf/latex-ltnews01.pdf"
OTHER = "pdf/fhs-3.0.pdf"
ELF = b"\x7fELF\x02\x01\x01" + bytes(200)


@pytest.fixture(scope="module")
def api_key(database: str) -> str:
    """A tenant of this module's own: corpus files that other modules upload must not
    come back here as existing documents (dedup), nor this module's go there."""
    return _new_key(f"archives-{uuid.uuid4().hex[:6]}")


def post(client: Any, key: str, data: bytes, name: str = "docs.zip", **query: Any) -> Any:
    query.setdefault("task", "summarize")
    files = {"file": (name, data, "application/octet-stream")}
    return client.post("/v1/batches/archive", headers=auth(key), params=query, files=files)


def items_of(batch_id: str) -> list[BatchItem]:
    with get_sessionmaker()() as s:
        rows = s.scalars(select(BatchItem).where(BatchItem.batch_id == parse_id(batch_id)))
        return sorted(rows, key=lambda i: i.line)


def expanded(client: Any, key: str, batch_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        with get_sessionmaker()() as s:
            batch = s.get(Batch, parse_id(batch_id))
            assert batch is not None
            if batch.expanded_at is None:
                return None
        out: dict[str, Any] = client.get(f"/v1/batches/{batch_id}", headers=auth(key)).json()
        return out

    return wait_for(done, what=f"batch {batch_id} expanded")


def results(client: Any, key: str, batch_id: str) -> list[dict[str, Any]]:
    resp = client.get(f"/v1/batches/{batch_id}/results", headers=auth(key))
    assert resp.status_code == 200
    return [json.loads(line) for line in resp.text.splitlines()]


@pytest.fixture(scope="module")
def mixed_zip() -> bytes:
    return zip_bytes(
        [
            ("papers/ltnews.pdf", corpus_file(SMALL).read_bytes()),
            ("papers/fhs.pdf", corpus_file(OTHER).read_bytes()),
            ("../escape.txt", b"outside"),
            (zip_info("link", stat.S_IFLNK | 0o777), b"/etc/passwd"),
            ("inner.zip", zip_bytes([("a.txt", b"hello")])),
            ("tool.bin", ELF),
        ]
    )


def test_zip_entries_become_documents_and_jobs_refused_ones_failed_items(
    client: Any, api_key: str, other_key: str, worker: Any, mixed_zip: bytes
) -> None:
    resp = post(client, api_key, mixed_zip, params=json.dumps({"focus": "news"}))
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["object"] == "batch" and body["id"].startswith("batch_")
    assert (body["kind"], body["task"], body["input_file_id"]) == ("archive", "summarize", None)
    assert body["request_counts"]["total"] == 6
    assert body["expires_at"] - body["created_at"] == 24 * 3600
    batch_id = body["id"]

    expanded(client, api_key, batch_id)
    items = items_of(batch_id)
    assert [i.line for i in items] == [1, 2, 3, 4, 5, 6]
    by_id = {i.custom_id: i for i in items}
    assert set(by_id) >= {"papers/ltnews.pdf", "papers/fhs.pdf", "inner.zip", "tool.bin"}
    failed = {i.custom_id: i.error_code for i in items if i.status == BatchItemStatus.failed}
    assert sorted(failed.values()) == sorted(
        ["unsafe_path", "link", "nested_archive", "unsupported_type"]
    )
    assert all(i.error_reason for i in items if i.status == BatchItemStatus.failed)
    good = [by_id["papers/ltnews.pdf"], by_id["papers/fhs.pdf"]]
    with get_sessionmaker()() as s:
        for item in good:
            job = s.get(Job, item.job_id)
            assert job is not None and job.batch_id == parse_id(batch_id)
            assert (job.task, job.params) == ("summarize", {"focus": "news"})
            assert job.document_id == item.document_id

    def parsed() -> bool:
        with get_sessionmaker()() as s:
            docs = [s.get(Document, i.document_id) for i in good]
            return all(d is not None and d.status == DocumentStatus.parsed for d in docs)

    wait_for(parsed, what="the archive's documents parsed")
    with get_sessionmaker()() as s:
        doc = s.get(Document, good[0].document_id)
        batch = s.get(Batch, parse_id(batch_id))
        assert doc is not None and batch is not None
        # The tenant's document for these bytes: this batch's own, or (in another order)
        # one an earlier test's upload made, which keeps its name and batch (dedup).
        if doc.batch_id == batch.id:
            assert doc.filename == "ltnews.pdf"
        else:
            assert doc.created_at < batch.created_at, (doc.batch_id, batch.id)

    shown = client.get(f"/v1/batches/{batch_id}", headers=auth(api_key)).json()
    assert shown["request_counts"]["failed"] >= 4
    assert shown["status"] in ("in_progress", "finalizing", "completed")
    # Other tenants see nothing of it.
    for path in ("", "/results"):
        assert (
            client.get(f"/v1/batches/{batch_id}{path}", headers=auth(other_key)).status_code == 404
        )
    assert client.post(f"/v1/batches/{batch_id}/cancel", headers=auth(other_key)).status_code == 404

    cancelled = client.post(f"/v1/batches/{batch_id}/cancel", headers=auth(api_key)).json()
    # Without a vLLM server the jobs fail once planned (no backend), or wait until the
    # cancel ends them: completed if they all ended first, else cancelled.
    assert cancelled["status"] in ("cancelled", "completed")
    counts = cancelled["request_counts"]
    assert counts["completed"] + counts["failed"] + counts["cancelled"] == counts["total"] == 6
    with get_sessionmaker()() as s:
        jobs = [s.get(Job, i.job_id) for i in good]
        assert all(j is not None and j.status.value in ("failed", "cancelled") for j in jobs)

    lines = results(client, api_key, batch_id)
    assert [line["custom_id"] for line in lines] == [i.custom_id for i in items]
    for line in lines:
        assert line["id"].startswith("batch_req_")
        assert line["response"] is None and line["error"]["code"] and line["error"]["message"]
    assert {line["error"]["code"] for line in lines} >= {"unsafe_path", "nested_archive"}


def test_tar_gz_batch_and_the_same_archive_twice_is_the_same_batch(
    client: Any, api_key: str, worker: Any
) -> None:
    data = tar_bytes(
        [("a/ltnews.pdf", corpus_file(SMALL).read_bytes()), ("b/notes.txt", b"Some notes.\n")],
        "w:gz",
    )
    first = post(client, api_key, data, "docs.tar.gz", metadata=json.dumps({"run": "1"}))
    assert first.status_code == 202, first.text
    again = post(client, api_key, data, "renamed.tgz")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other_task = post(client, api_key, data, "docs.tar.gz", max_output_tokens=77)
    assert other_task.status_code == 202 and other_task.json()["id"] != first.json()["id"]
    batch_id = first.json()["id"]
    assert first.json()["metadata"] == {"run": "1"}
    expanded(client, api_key, batch_id)
    assert [i.custom_id for i in items_of(batch_id)] == ["a/ltnews.pdf", "b/notes.txt"]
    assert all(i.job_id is not None for i in items_of(batch_id))

    listed = client.get("/v1/batches", headers=auth(api_key), params={"limit": 1}).json()
    assert listed["data"][0]["id"] == other_task.json()["id"] and listed["has_more"]
    after = listed["last_id"]
    page = client.get("/v1/batches", headers=auth(api_key), params={"after": after}).json()
    assert batch_id in [b["id"] for b in page["data"]]

    # The worker's schedule moves it on once every request has ended (here: failed
    # once planned, as no vLLM server is configured), through finalizing.
    def completed() -> dict[str, Any] | None:
        out: dict[str, Any] = client.get(f"/v1/batches/{batch_id}", headers=auth(api_key)).json()
        return out if out["status"] == "completed" else None

    done = wait_for(completed, what="the batch completed by the worker's advance")
    assert done["finalizing_at"] is not None and done["completed_at"] >= done["finalizing_at"]
    counts = done["request_counts"]
    assert counts["completed"] + counts["failed"] == counts["total"] == 2
    assert len(results(client, api_key, batch_id)) == 2
    kept = client.post(f"/v1/batches/{batch_id}/cancel", headers=auth(api_key)).json()
    assert kept["status"] == "completed" and kept["cancelling_at"] is None
    client.post(f"/v1/batches/{other_task.json()['id']}/cancel", headers=auth(api_key))


@pytest.fixture
def small_limits(database: str) -> Iterator[Settings]:
    tight = {"archive_max_entries": 3, "archive_max_total_bytes": 8 * 1024 * 1024}
    with api_settings(get_settings().model_copy(update=tight)) as s:
        yield s


def _batches() -> int:
    with get_sessionmaker()() as s:
        return s.scalar(select(func.count()).select_from(Batch)) or 0


def test_whole_archive_limits_are_refused_before_work_with_the_limit_named(
    client: Any, api_key: str, small_limits: Settings, tmp_path: Path
) -> None:
    before = _batches()
    cases = [
        (write_zip_of_many(tmp_path / "many.zip", 5), "max_entries"),
        (write_tar_gz_of_many(tmp_path / "many.tar.gz", 5), "max_entries"),
        (write_zip_of_zeros(tmp_path / "bomb.zip", 64 * 1024 * 1024), "max_total_bytes"),
    ]
    for path, limit in cases:
        resp = post(client, api_key, path.read_bytes(), path.name)
        assert resp.status_code == 413, resp.text
        error = resp.json()["error"]
        assert (error["code"], error["limit"]) == ("archive_too_large", limit)
        assert error["setting"] == f"archive_{limit}"
    assert _batches() == before


def test_empty_corrupt_and_non_archives_are_422(client: Any, api_key: str, database: str) -> None:
    tgz = tar_bytes([("a.txt", b"hello " * 1000)], "w:gz")
    cases = [
        (b"", "archive_empty"),
        (tar_bytes([]), "archive_empty"),
        (corpus_file(SMALL).read_bytes(), "archive_not_an_archive"),
        (tgz[: len(tgz) // 2], "archive_truncated"),
    ]
    for data, code in cases:
        resp = post(client, api_key, data, "x.bin")
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["code"] in (code, "archive_corrupt")
    bad = post(client, api_key, b"x", "x.zip", task="nope")
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_params"
    window = post(client, api_key, b"x", "x.zip", completion_window="3d")
    assert window.status_code == 422 and window.json()["error"]["code"] == "bad_window"
    assert client.get("/v1/batches/batch_nope", headers=auth(api_key)).status_code == 404


def _stored_batch(tenant_id: uuid.UUID, data: bytes, *, expire: bool = False) -> uuid.UUID:
    """A batch row over `data` stored as its archive, as the API leaves one."""
    settings = get_settings()
    store = BlobStore(settings.blobs)
    sha = hashlib.sha256(data).hexdigest()
    dest = store.archive(sha)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    with get_sessionmaker()() as s:
        batch = Batch(
            tenant_id=tenant_id, sha256=sha, task="summarize", params={}, total=3,
            max_output_tokens=64, dedup_key=uuid.uuid4().hex,
            expires_at=utcnow() + timedelta(hours=0 if expire else 1),
        )  # fmt: skip
        s.add(batch)
        s.commit()
        return batch.id


def _tenant(key: str) -> uuid.UUID:
    from service.models import ApiKey
    from service.security import lookup_prefix

    with get_sessionmaker()() as s:
        found = s.scalar(select(ApiKey.tenant_id).where(ApiKey.prefix == lookup_prefix(key)))
    assert found is not None
    return found


def test_expand_is_idempotent_and_an_archive_broken_midway_fails_the_batch_keeping_items(
    api_key: str, database: str
) -> None:
    sent: list[str] = []
    run = expansion.Expansion(
        get_settings(),
        BlobStore(get_settings().blobs),
        sent.append,  # the ingest of each new document, which wakes its job
        lambda _s, _ids: None,
    )
    good = tar_bytes([("one.txt", b"first\n" * 50), ("two.txt", b"second\n" * 50)])
    batch_id = _stored_batch(_tenant(api_key), good)
    archive = run.store.archive(hashlib.sha256(good).hexdigest())
    with get_sessionmaker()() as s:
        assert expansion.expand(run, s, batch_id) == "expanded"
        assert not archive.exists()  # its items hold all it was kept for
        # As after a crash before the end of the expansion was recorded.
        s.execute(Batch.__table__.update().where(Batch.id == batch_id).values(expanded_at=None))
        s.commit()
        archive.write_bytes(good)
        assert expansion.expand(run, s, batch_id) == "expanded"
        assert not archive.exists()
        rows = s.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id)).all()
        assert sorted(i.custom_id for i in rows) == ["one.txt", "two.txt"]
        assert len({i.job_id for i in rows}) == 2 and len(sent) == 2

    # A tar whose second header is damaged: the first entry is kept, the batch fails.
    broken = bytearray(tar_bytes([("a.txt", b"x" * 600), ("b.txt", b"y" * 10)]))
    broken[1536 : 1536 + 100] = b"\xff" * 100
    batch_id = _stored_batch(_tenant(api_key), bytes(broken))
    with get_sessionmaker()() as s:
        assert expansion.expand(run, s, batch_id).startswith("failed")
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == BatchStatus.failed
        assert batch.errors and batch.errors[0]["code"] == "corrupt"
        kept = s.scalars(select(BatchItem.custom_id).where(BatchItem.batch_id == batch_id)).all()
        assert list(kept) == ["a.txt"]


def test_a_batch_past_its_window_expires_its_unfinished_jobs(api_key: str, database: str) -> None:
    run = expansion.Expansion(
        get_settings(), BlobStore(get_settings().blobs), lambda _d: None, lambda _s, _i: None
    )
    batch_id = _stored_batch(
        _tenant(api_key), tar_bytes([("late.txt", b"late\n" * 40)]), expire=True
    )
    with get_sessionmaker()() as s:
        expansion.expand(run, s, batch_id)
    with get_sessionmaker()() as s:
        lifecycle.advance_one(s, batch_id, utcnow())
    with get_sessionmaker()() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == BatchStatus.expired
        assert batch.expired_at is not None
        item = s.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id)).one()
        job = s.get(Job, item.job_id)
        assert job is not None and (job.status.value, job.error_code) == ("cancelled", "expired")
        found = lifecycle.counts(s, batch)
        assert (found.expired, found.unfinished) == (1, 0)


def test_cancel_ends_unfinished_jobs_keeps_what_finished_and_results_show_both(
    client: Any, api_key: str, database: str
) -> None:
    """Expanded here with a dispatcher that sends nothing: the documents count as sent
    (the sweeper leaves them for an hour), so their jobs stay queued until the cancel."""
    from service.models import JobStatus, Result

    run = expansion.Expansion(
        get_settings(), BlobStore(get_settings().blobs), lambda _d: None, lambda _s, _i: None
    )
    tag = uuid.uuid4().hex.encode()  # bytes no other test uploaded: fresh documents
    data = tar_bytes(
        [("done.txt", b"done " + tag), ("../bad.txt", b"x"), ("waits.txt", b"waits " + tag)]
    )
    batch_id = _stored_batch(_tenant(api_key), data)
    with get_sessionmaker()() as s:
        assert expansion.expand(run, s, batch_id) == "expanded"
        items = {
            i.custom_id: i
            for i in s.scalars(select(BatchItem).where(BatchItem.batch_id == batch_id))
        }
        # One request finished before the cancel, as a worker would store it.
        done = s.get(Job, items["done.txt"].job_id)
        assert done is not None and done.status == JobStatus.queued
        done.status, done.finished_at = JobStatus.succeeded, utcnow()
        s.add(Result(job_id=done.id, text="a summary", request_id="req-1", model="m"))
        s.commit()
    public = lifecycle.public_id(batch_id)
    shown = client.get(f"/v1/batches/{public}", headers=auth(api_key)).json()
    assert shown["status"] == "in_progress"
    assert shown["request_counts"] == {
        "total": 3, "completed": 1, "failed": 1, "cancelled": 0, "expired": 0
    }  # fmt: skip
    assert [line["custom_id"] for line in results(client, api_key, public)] == [
        "done.txt",
        "../bad.txt",
    ]

    out = client.post(f"/v1/batches/{public}/cancel", headers=auth(api_key)).json()
    assert out["status"] == "cancelled" and out["cancelled_at"] >= out["cancelling_at"]
    assert out["request_counts"] == {
        "total": 3, "completed": 1, "failed": 1, "cancelled": 1, "expired": 0
    }  # fmt: skip
    with get_sessionmaker()() as s:
        waited = s.get(Job, items["waits.txt"].job_id)
        assert waited is not None and waited.status == JobStatus.cancelled
        assert waited.error_code == "cancelled"
    lines = {line["custom_id"]: line for line in results(client, api_key, public)}
    assert list(lines) == ["done.txt", "../bad.txt", "waits.txt"]
    ok = lines["done.txt"]
    assert ok["error"] is None and ok["response"]["status_code"] == 200
    assert ok["response"]["request_id"] == "req-1"
    assert ok["response"]["body"]["text"] == "a summary"
    assert lines["../bad.txt"]["error"]["code"] == "unsafe_path"
    assert lines["waits.txt"]["error"]["code"] == "cancelled"
    again = client.post(f"/v1/batches/{public}/cancel", headers=auth(api_key)).json()
    assert again["status"] == "cancelled"


def test_a_cancel_before_the_expansion_stops_it_and_the_batch_ends_cancelled(
    api_key: str, database: str
) -> None:
    run = expansion.Expansion(
        get_settings(), BlobStore(get_settings().blobs), lambda _d: None, lambda _s, _i: None
    )
    batch_id = _stored_batch(_tenant(api_key), tar_bytes([("never.txt", b"never\n")]))
    with get_sessionmaker()() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None
        lifecycle.cancel(s, batch)
        assert batch.status == BatchStatus.cancelling  # the expansion has not stopped yet
        assert expansion.expand(run, s, batch_id) == "stopped"
        lifecycle.advance_one(s, batch_id, utcnow())
    with get_sessionmaker()() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None and batch.status == BatchStatus.cancelled
        assert (batch.total, batch.cancelled_at is not None) == (0, True)
        made = s.scalar(select(func.count()).where(BatchItem.batch_id == batch_id))
        assert made == 0


def test_a_batchs_waiting_jobs_do_not_hold_back_the_tenants_own(client: Any, database: str) -> None:
    from service.keys import create_key

    with get_sessionmaker()() as s:
        key = create_key(s, f"batch-quota-{uuid.uuid4().hex[:8]}")
    run = expansion.Expansion(
        get_settings(), BlobStore(get_settings().blobs), lambda _d: None, lambda _s, _i: None
    )
    tag = uuid.uuid4().hex.encode()
    entries = [(f"{n}.txt", f"entry {n} ".encode() + tag) for n in range(3)]
    batch_id = _stored_batch(_tenant(key), tar_bytes(entries))
    with get_sessionmaker()() as s:
        assert expansion.expand(run, s, batch_id) == "expanded"
        waiting = s.scalar(
            select(func.count()).where(Job.batch_id == batch_id, Job.status == "queued")
        )
        assert waiting == 3
    limited = get_settings().model_copy(update={"tenant_max_queued_jobs": 1})
    with api_settings(limited):
        files = {"file": ("mine.txt", b"my own " + tag, "text/plain")}
        doc = client.post("/v1/documents", headers=auth(key), files=files).json()["id"]
        body = {"document_id": doc, "task": "summarize"}
        # Three batch jobs wait, over the limit of one: counted, they would make this a 429.
        first = client.post("/v1/jobs", headers=auth(key), json=body)
        assert first.status_code == 202, first.text
    with get_sessionmaker()() as s:
        batch = s.get(Batch, batch_id)
        assert batch is not None
        lifecycle.cancel(s, batch)
