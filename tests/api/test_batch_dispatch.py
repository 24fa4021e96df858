"""Batch tasks do not take worker slots ahead of interactive ones: real Redis (with the
transport's ten priority steps), a real Celery worker with one slot. One tenant's
batch tasks are all in the broker before its own interactive job's; the interactive
one is still taken first. The jobs wait on a role with no backend, so each task polls
briefly and queues itself again."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from service.db import get_sessionmaker
from service.jobs import dispatch
from service.models import Batch, Tenant, utcnow
from service.queue import JOBS_QUEUE
from tests.api.test_fair_dispatch import claimed, done_with, make_jobs, one_slot_worker
from tests.conftest import stop_worker, wait_for

BATCH_JOBS = 10


def test_an_interactive_task_is_taken_before_its_tenants_batch_tasks(
    database: str, broker: Any, tmp_path: Path
) -> None:
    role = f"r{uuid.uuid4().hex[:12]}"  # no backend of this role: nobody is admitted
    sessions = get_sessionmaker()
    # As in test_fair_dispatch: the one slot is for this test's tasks only.
    for key in broker.scan_iter(match=f"{JOBS_QUEUE}*"):
        broker.delete(key)
    with sessions() as session:
        tenant = Tenant(name=f"mixed-{role}")
        session.add(tenant)
        session.commit()
        batch = Batch(tenant_id=tenant.id, expires_at=utcnow() + timedelta(hours=24))
        session.add(batch)
        session.commit()
        batch_jobs = make_jobs(session, tenant.id, role, BATCH_JOBS, batch_id=batch.id)
        [interactive] = make_jobs(session, tenant.id, role, 1)
        for job_id in [*batch_jobs, interactive]:
            dispatch.send(session, [job_id])

    worker = one_slot_worker(tmp_path / "worker.log")
    try:
        wait_for(lambda: claimed([interactive]) == 1, timeout=180, interval=0.05)
        assert claimed(batch_jobs) == 0, "a batch task took the slot first"
        # Once the interactive job is done with, the batch tasks have the slot.
        done_with(interactive)
        wait_for(lambda: claimed(batch_jobs) == BATCH_JOBS, timeout=300, interval=0.2)
    finally:
        stop_worker(worker)
        with sessions() as s:
            s.execute(delete(Tenant).where(Tenant.id == tenant.id))
            s.commit()
