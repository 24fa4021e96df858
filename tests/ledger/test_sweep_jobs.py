"""The sweeper's job round: a map-reduce job whose request the ledger failed (no task
saw it) is failed whole, and a sweep round's parts do not stop one another. Each test
sweeps only its own tenant's rows."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from service.blobstore import BlobStore
from service.config import Settings, get_settings
from service.models import Document, Job, JobStatus, utcnow
from tests.ledger.conftest import World
from tests.ledger.workload import start_tree, tree_plan
from workers import sweeper


def test_a_request_the_ledger_failed_fails_its_tree(world: World) -> None:
    now = utcnow()
    parent = start_tree(world, tree_plan(world.role, [100, 100, 100], 2, 50), now, 1)
    other = start_tree(world, tree_plan(world.role, [100, 100], 2, 50), now, 2)
    with world.sessions() as s:
        maps = s.scalars(select(Job.id).where(Job.parent_id == parent).order_by(Job.id)).all()
        # What the ledger writes when a request can never fit: no task is left to see it.
        s.execute(
            update(Job)
            .where(Job.id == maps[0])
            .values(status=JobStatus.failed, error_code="too_large", error_reason="never fits")
        )
        s.commit()
    sent: list[str] = []
    with world.sessions() as s:
        sweeper.sweep_jobs(
            s, get_settings(), lambda job_id, _p: sent.append(job_id), world.tenant_id
        )
    with world.sessions() as s:
        top = s.get(Job, parent)
        assert top is not None
        assert top.status == JobStatus.failed
        assert top.error_code == "map_failed"
        assert "never fits" in (top.error_reason or "")
        kids = s.scalars(select(Job).where(Job.parent_id == parent)).all()
        assert all(k.status not in (JobStatus.queued, JobStatus.waiting_for_capacity) for k in kids)
        untouched = s.get(Job, other)
        assert untouched is not None and untouched.status == JobStatus.running
    # Nothing of the failed tree is sent again; the healthy tree's waiting maps may be.
    assert not set(sent) & {str(k.id) for k in kids}


def test_a_failing_part_does_not_stop_the_others(world: World, tmp_path: Path) -> None:
    # The documents part fails for real: the broker refuses the re-dispatch of a
    # document whose message was lost. The jobs and temp-file parts must run anyway.
    with world.sessions() as s:
        lost = Document(
            tenant_id=world.tenant_id,
            sha256=uuid.uuid4().hex,
            filename="lost.pdf",
            media_type="application/pdf",
            size_bytes=1,
            created_at=utcnow() - timedelta(minutes=5),
        )
        s.add(lost)
        s.commit()
    unpolled = world.job(100)
    settings = Settings(data_dir=tmp_path, blob_dir=tmp_path / "blobs")
    store = BlobStore(settings.blobs)
    store.ensure()
    abandoned, fresh = store.tmp / "up-abandoned", store.tmp / "up-fresh"
    abandoned.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - settings.temp_upload_max_age_s - 60
    os.utime(abandoned, (old, old))

    def broker_down(document_id: str) -> None:
        raise ConnectionError(f"broker unreachable, {document_id} not sent")

    jobs_sent: list[str] = []
    with pytest.raises(ConnectionError, match=str(lost.id)):
        sweeper.sweep_all(
            world.sessions,
            settings,
            broker_down,
            lambda job_id, _p: jobs_sent.append(job_id),
            tenant_id=world.tenant_id,
        )
    assert jobs_sent == [str(unpolled)]
    assert not abandoned.exists() and fresh.exists()
    with world.sessions() as s:
        taken = s.get(Document, lost.id)
        assert taken is not None and taken.dispatched_at is not None
