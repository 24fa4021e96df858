"""An archive expands a chunk of entries at a time (`service.batches.entries`): each
line still gets exactly one item and one job, in line order, whatever the chunk holds
(bytes seen twice, a document the tenant has, entries refused) and when another run
makes one of its lines meanwhile. On real Postgres, chunks made small."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from service.batches import entries, expansion
from service.blobstore import BlobStore
from service.config import get_settings
from service.db import get_sessionmaker
from service.documents import ReceivedFile, register_upload
from service.models import BatchItem, BatchItemStatus, Document, Job, JobStatus
from tests.api.test_archive_batches import _stored_batch, _tenant
from tests.hostile_archives import tar_bytes


class Recorder:
    """The expansion's sends, as the worker's would go: ingests and jobs, in order."""

    def __init__(self) -> None:
        self.ingests: list[str] = []
        self.jobs: list[uuid.UUID] = []

    def run(self) -> expansion.Expansion:
        settings = get_settings()
        return expansion.Expansion(settings, BlobStore(settings.blobs), self.ingest, self.send)

    def ingest(self, doc_id: str) -> None:
        self.ingests.append(doc_id)

    def send(self, session: Any, ids: list[uuid.UUID]) -> None:
        self.jobs.extend(ids)
        session.commit()


def _items(batch_id: uuid.UUID) -> list[BatchItem]:
    with get_sessionmaker()() as s:
        stmt = select(BatchItem).where(BatchItem.batch_id == batch_id).order_by(BatchItem.line)
        return list(s.scalars(stmt))


def _text(n: int) -> bytes:
    return f"entry {n} of the chunk test, {uuid.uuid4()}\n".encode() * 30


def test_every_kind_of_line_in_small_chunks_gets_one_item_and_one_job(
    api_key: str, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(entries, "CHUNK_ENTRIES", 3)
    tenant = _tenant(api_key)
    settings = get_settings()
    store = BlobStore(settings.blobs)
    had = _text(0)  # a document the tenant uploaded before the batch
    fd, tmp = store.temp_file()
    with open(fd, "wb") as f:
        f.write(had)
    received = ReceivedFile(tmp, hashlib.sha256(had).hexdigest(), len(had), "had.txt", had[:64])
    with get_sessionmaker()() as s:
        before, created = register_upload(s, store, tenant, received)
        assert created
        before_id = before.id
    twice = _text(1)
    lines = [
        ("a.txt", _text(2)),
        ("b.txt", twice),
        ("c.txt", had),
        ("../d.txt", _text(3)),  # refused by the reader: unsafe path
        ("e.txt", twice),  # the same bytes as b.txt, in another chunk
        ("f.bin", b"\x00\x01\x02\xff" * 64),  # refused at registration: no such type
        ("g.txt", _text(4)),
        ("h.txt", _text(5)),
    ]
    batch_id = _stored_batch(tenant, tar_bytes(lines))
    sends = Recorder()
    with get_sessionmaker()() as s:
        assert expansion.expand(sends.run(), s, batch_id) == "expanded"

    items = _items(batch_id)
    assert [(i.line, i.custom_id) for i in items] == [
        (n, name) for n, (name, _) in enumerate(lines, start=1)
    ]
    by = {i.custom_id: i for i in items}
    failed = {c: i.error_code for c, i in by.items() if i.status == BatchItemStatus.failed}
    assert failed == {"../d.txt": "unsafe_path", "f.bin": "unsupported_type"}
    good = [i for i in items if i.status != BatchItemStatus.failed]
    assert all(i.status == BatchItemStatus.queued and i.job_id for i in good)
    assert len({i.job_id for i in good}) == len(good) == 6
    assert by["b.txt"].document_id == by["e.txt"].document_id  # the same bytes: one document
    assert by["c.txt"].document_id == before_id  # the tenant's own, reused
    new_docs = {i.document_id for i in good} - {before_id}
    assert sorted(sends.ingests) == sorted(str(d) for d in new_docs)  # each parsed once
    # A new document's job waits for its ingest to wake it; only the jobs on documents
    # that were there already are sent (`jobs.create` plans or sends those).
    assert sorted(sends.jobs) == sorted([by["c.txt"].job_id, by["e.txt"].job_id])
    with get_sessionmaker()() as s:
        for item in good:
            job = s.get(Job, item.job_id)
            assert job is not None and job.status == JobStatus.queued
            assert (job.document_id, job.batch_id) == (item.document_id, batch_id)
        docs = s.scalars(select(Document).where(Document.id.in_(new_docs))).all()
        assert {d.batch_id for d in docs} == {batch_id}
        assert all(d.dispatched_at is not None for d in docs)


def test_a_line_another_run_makes_meanwhile_is_made_once(
    api_key: str, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced interleaving: between a chunk's documents and its items, another run (a
    task sent twice) inserts the item of one of its lines. The chunk's transaction loses
    on the unique custom_id and each line is made on its own: still one item and one
    job per line."""
    monkeypatch.setattr(entries, "CHUNK_ENTRIES", 4)
    tenant = _tenant(api_key)
    names = ["p.txt", "q.txt", "r.txt", "s.txt", "t.txt"]
    batch_id = _stored_batch(tenant, tar_bytes([(n, _text(10 + i)) for i, n in enumerate(names)]))
    sends = Recorder()
    register = entries.register_uploads
    raced: list[bool] = []

    def then_another_run(*args: Any) -> Any:
        stored = register(*args)
        if not raced:  # once, in the first chunk
            raced.append(True)
            with get_sessionmaker()() as other:
                other.add(BatchItem(batch_id=batch_id, custom_id="q.txt", line=2))
                other.commit()
        return stored

    monkeypatch.setattr(entries, "register_uploads", then_another_run)
    with get_sessionmaker()() as s:
        assert expansion.expand(sends.run(), s, batch_id) == "expanded"
    items = _items(batch_id)
    assert [i.custom_id for i in items] == names
    assert all(i.status == BatchItemStatus.queued and i.job_id for i in items)
    assert len({i.job_id for i in items}) == len(names)
    assert sends.jobs == [by_line.job_id for by_line in items[:4]]  # made on their own
    with get_sessionmaker()() as s:
        jobs = s.scalars(select(Job).where(Job.batch_id == batch_id)).all()
        assert len(jobs) == len(names)  # none made twice
