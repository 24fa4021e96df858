"""`service.documents.delete` on Postgres and SQLite (the embedded default): a
document with a job holding a KV lease is refused, or deleted with the job
cancelled and its lease gone; the job row stays with document_id null."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service import documents, ledger
from service.blobstore import BlobStore
from service.documents import ReceivedFile
from service.errors import Conflict
from service.models import Document, Job, JobStatus, KvLease
from tests.ledger.conftest import World, at


def test_delete_refuses_then_cancels_a_leased_job(world: World, tmp_path: Path) -> None:
    world.backend(10_000)
    job = world.job(1_000, 60.0, heartbeat_at=at(0))
    with world.sessions() as s:
        assert [a.job_id for a in ledger.try_admit(s, world.role, at(1), 60.0).admitted] == [job]
    store = BlobStore(tmp_path)
    store.ensure()

    with world.sessions() as s:
        doc = s.get(Document, world.doc)
        assert doc is not None
        with pytest.raises(Conflict) as refused:
            documents.delete(s, store, doc, cancel_jobs=False)
        assert refused.value.code == "document_in_use"
        assert refused.value.extra["job_ids"] == [str(job)]
    with world.sessions() as s:
        assert s.get(Document, world.doc) is not None
        assert s.scalar(select(func.count()).where(KvLease.job_id == job)) == 1

        doc = s.get(Document, world.doc)
        assert doc is not None
        documents.delete(s, store, doc, cancel_jobs=True)
    with world.sessions() as s:
        assert s.get(Document, world.doc) is None
        assert s.scalar(select(func.count()).where(KvLease.job_id == job)) == 0
        row = s.get(Job, job)
        assert row is not None
        assert (row.status, row.error_code, row.document_id) == (
            JobStatus.cancelled,
            "cancelled",
            None,
        )


def test_shared_original_lives_until_its_last_document(world: World, tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    body = f"shared by two tenants {uuid.uuid4()}\n".encode() * 10
    other = World(world.sessions)

    def register(tenant: uuid.UUID) -> uuid.UUID:
        fd, tmp = store.temp_file()
        os.write(fd, body)
        os.close(fd)
        received = ReceivedFile(tmp, hashlib.sha256(body).hexdigest(), len(body), "s.txt", body)
        with world.sessions() as s:
            doc, created = documents.register_upload(s, store, tenant, received)
            assert created and not tmp.exists()
            return doc.id

    docs = [register(world.tenant_id), register(other.tenant_id)]
    original = store.original(hashlib.sha256(body).hexdigest())
    for i, doc_id in enumerate(docs):
        with world.sessions() as s:
            doc = s.get(Document, doc_id)
            assert doc is not None
            documents.delete(s, store, doc, cancel_jobs=False)
        assert original.is_file() == (i == 0)
    assert list(store.tmp.iterdir()) == []
