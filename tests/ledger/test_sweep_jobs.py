"""The sweeper's job round: a map-reduce job whose request the ledger failed (no task
saw it) is failed whole, and a sweep round's parts do not stop one another."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from service.config import get_settings
from service.models import Job, JobStatus, utcnow
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


def test_a_failing_part_does_not_stop_the_temp_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken(*_: object, **__: object) -> int:
        calls.append("documents")
        raise RuntimeError("documents part broke")

    def temp(self: object, max_age_s: float) -> int:
        calls.append("temp")
        return 0

    monkeypatch.setattr(sweeper, "sweep", broken)
    monkeypatch.setattr(sweeper.BlobStore, "sweep_temp", temp)

    class _NoSession:
        def __enter__(self) -> object:
            return object()

        def __exit__(self, *_: object) -> None:
            return None

    with pytest.raises(RuntimeError, match="documents part broke"):
        sweeper.sweep_all(_NoSession, get_settings(), lambda _d: None, None)  # type: ignore[arg-type]
    assert calls == ["documents", "temp"]
