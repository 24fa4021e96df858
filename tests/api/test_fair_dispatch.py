"""Job tasks reach worker slots in an order fair between tenants (broker priorities),
not in the order they were sent: one tenant's backlog does not hold back another's
single job before admission can even see it. Real Redis, a real Celery worker with
one slot; the jobs wait for capacity on a role with no backend, so each task polls
briefly and queues itself again (the requeue path sends at priority too)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update

from service.db import get_sessionmaker
from service.jobs import dispatch
from service.models import Job, JobStatus, Tenant, utcnow
from service.queue import JOBS_QUEUE
from tests.conftest import start_worker, stop_worker, wait_for

A_JOBS = 20


def make_jobs(
    session: Any, tenant_id: uuid.UUID, role: str, n: int, **values: Any
) -> list[uuid.UUID]:
    now = utcnow()
    values = {"status": JobStatus.waiting_for_capacity, **values}
    jobs = [
        Job(
            tenant_id=tenant_id,
            task="summarize",
            max_output_tokens=16,
            idempotency_key=uuid.uuid4().hex,
            role=role,
            kv_bytes=1024,
            kv_blocks=1,
            **{"waiting_since": now - timedelta(seconds=1), **values},
        )
        for _ in range(n)
    ]
    session.add_all(jobs)
    session.commit()
    return [j.id for j in jobs]


def claimed(ids: list[uuid.UUID]) -> int:
    """How many of these jobs a worker has taken a task of."""
    with get_sessionmaker()() as s:
        q = select(func.count()).where(Job.id.in_(ids), Job.worker.is_not(None))
        return s.scalar(q) or 0


def one_slot_worker(log: Path) -> Any:
    return start_worker(
        log,
        concurrency=1,
        env={
            "LONGDOC_ADMISSION_WAIT_S": "0.3",
            "LONGDOC_ADMISSION_POLL_S": "0.05",
            # Its sweeper must not send this one slot the waiting jobs earlier tests
            # left in the shared database (each would poll and requeue itself for ever,
            # a round of hundreds of tasks); the test's own jobs were all just sent.
            "LONGDOC_JOB_REDISPATCH_AFTER_S": "86400",
        },
    )


def done_with(job_id: uuid.UUID) -> None:
    """The job ended (cancelled), so that its task stops taking the slot."""
    with get_sessionmaker()() as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.cancelled, finished_at=utcnow())
        )
        s.commit()


def test_small_tenant_task_taken_before_big_backlog(
    database: str, broker: Any, tmp_path: Path
) -> None:
    role = f"r{uuid.uuid4().hex[:12]}"  # no backend of this role: nobody is admitted
    sessions = get_sessionmaker()
    # The one slot is for this test's tasks: jobs other tests left waiting would poll
    # and requeue themselves ahead of A's backlog (fewer jobs, better priority) for as
    # long as they wait. Their queued tasks are dropped here, and this worker's sweeper
    # sends them no new ones (below); their rows are left as they are.
    for key in broker.scan_iter(match=f"{JOBS_QUEUE}*"):
        broker.delete(key)
    with sessions() as session:
        big, small = Tenant(name=f"big-{role}"), Tenant(name=f"small-{role}")
        session.add_all([big, small])
        session.commit()
        a_jobs = make_jobs(session, big.id, role, A_JOBS)
        [b_job] = make_jobs(session, small.id, role, 1)
        # All of A's tasks are in the broker before B's, and no worker is running yet.
        for job_id in [*a_jobs, b_job]:
            dispatch.send(session, [job_id])

    def b_task_ids() -> set[str]:
        with sessions() as s:
            seen.add(str(s.scalar(select(Job.task_id).where(Job.id == b_job))))
        return seen

    seen: set[str] = set()
    worker = one_slot_worker(tmp_path / "worker.log")
    try:
        wait_for(lambda: claimed([b_job]) == 1, timeout=180, interval=0.05)
        assert claimed(a_jobs) == 0, "B's task waited behind A's in the broker"
        # B's task polls, queues itself again, and its new task again goes first: three
        # requeues later A's backlog has still not had the slot.
        wait_for(lambda: len(b_task_ids()) >= 4, timeout=180, interval=0.05)
        assert claimed(a_jobs) == 0, "B's requeued task went behind A's backlog"

        # Once B's job is done with, A's tasks have the slot: none of them was lost.
        done_with(b_job)
        wait_for(lambda: claimed(a_jobs) == A_JOBS, timeout=300, interval=0.2)
    finally:
        stop_worker(worker)
        with sessions() as s:
            s.execute(delete(Tenant).where(Tenant.id.in_([big.id, small.id])))
            s.commit()


def test_embedded_broker_takes_prioritised_tasks_in_sent_order(tmp_path: Path) -> None:
    """The SQLite transport of the embedded default has no priorities: a task sent
    with one is still delivered, in the order sent."""
    from service.config import Settings
    from service.queue import JOB_TASK, make_celery

    app = make_celery(Settings(broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}"))
    for job_id, priority in (("low", 9), ("high", 0)):
        app.send_task(JOB_TASK, args=[job_id], queue=JOBS_QUEUE, priority=priority)
    got: list[str] = []
    with app.connection_for_read() as conn:
        queue = conn.SimpleQueue(JOBS_QUEUE)
        for _ in range(2):
            message = queue.get(timeout=30)
            got.append(message.payload[0][0])  # (args, kwargs, embed)
            message.ack()
        queue.close()
    assert got == ["low", "high"]
