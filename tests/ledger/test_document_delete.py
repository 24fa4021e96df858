"""`service.documents.delete` on Postgres and SQLite (the embedded default): a
document with a job holding a KV lease is refused, or deleted with the job
cancelled and its lease gone; the job row stays with document_id null."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import HTTPException
from sqlalchemy import func, select

from service import documents
from service.blobstore import BlobStore
from service.models import Document, Job, JobStatus, KvLease
from tests.ledger.conftest import World, at
from workers import ledger


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
        with pytest.raises(HTTPException) as refused:
            documents.delete(s, store, doc, cancel_jobs=False)
        assert refused.value.status_code == 409
        assert refused.value.detail["job_ids"] == [str(job)]  # type: ignore[index]
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
