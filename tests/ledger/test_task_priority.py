"""A job task's broker priority: the bucketing of its tenant's backlog onto the
priority steps (pure), and the backlog's count on Postgres and SQLite."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from ingestion.capacity.priority import (
    BATCH_STEPS,
    INTERACTIVE_STEPS,
    PRIORITY_STEPS,
    URGENT_WITHIN_S,
    backlog_cap,
    job_priority,
    task_priority,
    urgency_step,
)
from service.jobs import dispatch
from service.models import Batch, BatchStatus, JobStatus, Tenant, utcnow
from tests.api.test_fair_dispatch import make_jobs


def test_small_backlogs_go_first_big_ones_last() -> None:
    ns = (0, 1, 3, 4, 15, 16, 63, 64, 255, 256, 10**6)
    got = {n: job_priority(n, 0.0, 900.0) for n in ns}
    assert got == {0: 0, 1: 0, 3: 0, 4: 1, 15: 1, 16: 2, 63: 2, 64: 3, 255: 3, 256: 4, 10**6: 4}
    # Never worse for a smaller backlog, and always one of the transport's steps.
    order = [job_priority(n, 0.0, 900.0) for n in range(2000)]
    assert order == sorted(order)
    assert set(order) == set(INTERACTIVE_STEPS) <= set(PRIORITY_STEPS)


def test_an_aged_job_goes_at_the_top_whatever_its_backlog() -> None:
    assert job_priority(500, 899.0, 900.0) == INTERACTIVE_STEPS[-1]
    assert job_priority(500, 900.0, 900.0) == PRIORITY_STEPS[0]


def test_batch_tasks_go_below_every_interactive_one_until_aged() -> None:
    worst_interactive = task_priority(10**6, 0.0, False, 900.0, 3600.0)
    best_batch = task_priority(1, 0.0, True, 900.0, 3600.0)
    assert worst_interactive < best_batch
    # The batch scale is a backlog scale too: fair between tenants' batches.
    batch = [task_priority(n, 0.0, True, 900.0, 3600.0) for n in range(2000)]
    assert batch == sorted(batch) and set(batch) == set(BATCH_STEPS)
    # The interactive bound does not age a batch job; its own does, to the very top.
    assert task_priority(10**6, 1000.0, True, 900.0, 3600.0) == BATCH_STEPS[-1]
    assert task_priority(10**6, 3600.0, True, 900.0, 3600.0) == PRIORITY_STEPS[0]


def test_a_batch_due_sooner_goes_sooner_whatever_its_backlog() -> None:
    hour = URGENT_WITHIN_S
    due = [urgency_step(s) for s in (0, hour, hour + 1, 2 * hour, 4 * hour, 8 * hour, 9 * hour)]
    assert due == [5, 5, 6, 6, 7, 8, 9] and due == sorted(due)
    assert urgency_step(24 * hour) == BATCH_STEPS[-1]  # a fresh day's batch: nothing
    assert set(due) == set(BATCH_STEPS)
    # A big backlog due in half an hour goes before a small one due in a day...
    urgent = task_priority(10**4, 0.0, True, 900.0, 3600.0, expires_in_s=hour / 2)
    small = task_priority(20, 0.0, True, 900.0, 3600.0, expires_in_s=24 * hour)
    assert urgent == BATCH_STEPS[0] < small
    # ...and still after every interactive task; urgency never demotes a small backlog.
    assert urgent > task_priority(10**6, 0.0, False, 900.0, 3600.0)
    assert task_priority(1, 0.0, True, 900.0, 3600.0, expires_in_s=1e9) == BATCH_STEPS[0]


def test_the_cap_is_where_the_last_step_starts() -> None:
    for steps in (INTERACTIVE_STEPS, BATCH_STEPS, (0, 5), (7,)):
        cap = backlog_cap(steps)
        assert job_priority(cap, 0.0, 9e9, steps=steps) == steps[-1]
        if len(steps) > 1:
            assert job_priority(cap - 1, 0.0, 9e9, steps=steps) != steps[-1]


def test_other_steps_and_bases() -> None:
    assert [job_priority(n, 0.0, 9e9, steps=(0, 5), base=2) for n in (1, 2, 100)] == [0, 5, 5]
    assert job_priority(10**9, 0.0, 9e9, steps=(7,)) == 7
    with pytest.raises(ValueError):
        job_priority(1, 0.0, 1.0, steps=())
    with pytest.raises(ValueError):
        job_priority(1, 0.0, 1.0, base=1)


def test_backlog_counts_a_tenants_waiting_jobs_and_requests(
    sessions: sessionmaker[Session],
) -> None:
    role = f"r{uuid.uuid4().hex[:12]}"
    with sessions() as session:
        mine, other = Tenant(name=f"mine-{role}"), Tenant(name=f"other-{role}")
        session.add_all([mine, other])
        session.commit()
        [parent] = make_jobs(session, mine.id, role, 1, status=JobStatus.running)
        requests = make_jobs(session, mine.id, role, 4, parent_id=parent)
        [queued] = make_jobs(session, mine.id, role, 1, status=JobStatus.queued)
        make_jobs(session, mine.id, role, 10, status=JobStatus.succeeded)
        make_jobs(session, other.id, role, 30)
        aged_since = utcnow() - timedelta(hours=1)
        [aged] = make_jobs(session, mine.id, role, 1, waiting_since=aged_since)
        # Four requests, one queued job and the aged one wait: 6, the second step (1);
        # the running parent, finished jobs and the other tenant's 30 do not count.
        got = dispatch.priorities(session, [*requests, queued, aged, uuid.uuid4()])
        assert got == {**{r: 1 for r in requests}, queued: 1, aged: 0}


def test_a_backlog_past_the_cap_gets_the_last_step_of_its_class_only(
    sessions: sessionmaker[Session],
) -> None:
    """Counted up to the cap only (a batch sends thousands of jobs), a backlog past it
    still goes last; and a tenant's batch backlog does not count against its
    interactive jobs, nor the other way round."""
    role = f"r{uuid.uuid4().hex[:12]}"
    with sessions() as session:
        big = Tenant(name=f"big-{role}")
        session.add(big)
        session.commit()
        many = make_jobs(session, big.id, role, backlog_cap() + 40)
        batch = Batch(tenant_id=big.id, endpoint="/v1/jobs", status=BatchStatus.in_progress)
        session.add(batch)
        session.commit()
        [in_batch] = make_jobs(session, big.id, role, 1, batch_id=batch.id)
        got = dispatch.priorities(session, [many[0], many[-1], in_batch])
        assert got == {many[0]: INTERACTIVE_STEPS[-1], many[-1]: INTERACTIVE_STEPS[-1],
                       in_batch: BATCH_STEPS[0]}  # fmt: skip


def test_the_batch_expiring_first_is_sent_first(sessions: sessionmaker[Session]) -> None:
    """Two batches of one tenant, the same big backlog: the one due within the hour goes
    at the top of the batch scale, the one due in a week at the bottom."""
    role = f"r{uuid.uuid4().hex[:12]}"
    with sessions() as session:
        tenant = Tenant(name=f"due-{role}")
        session.add(tenant)
        session.commit()
        soon = Batch(tenant_id=tenant.id, endpoint="/v1/jobs", status=BatchStatus.in_progress,
                     expires_at=utcnow() + timedelta(minutes=30))  # fmt: skip
        late = Batch(tenant_id=tenant.id, endpoint="/v1/jobs", status=BatchStatus.in_progress,
                     expires_at=utcnow() + timedelta(days=7))  # fmt: skip
        session.add_all([soon, late])
        session.commit()
        first = make_jobs(session, tenant.id, role, 150, batch_id=soon.id)
        second = make_jobs(session, tenant.id, role, 150, batch_id=late.id)
        got = dispatch.priorities(session, [first[0], second[0]])
        assert got == {first[0]: BATCH_STEPS[0], second[0]: BATCH_STEPS[-1]}
