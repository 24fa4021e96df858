"""The one scheduler of periodic work (`service/periodic.py`): each job at its own
interval, an error logged and survived, a database outage outlived; the worker's
schedule is the sweeper and the refresher at the settings' intervals; a heartbeat
beats until its block ends."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from service.config import get_settings
from service.db import get_sessionmaker, make_engine
from service.models import Tenant
from service.periodic import Job, Scheduler, heartbeat
from tests.conftest import wait_for
from tests.netrelay import Forwarder
from workers.schedule import worker_schedule

log = logging.getLogger("tests.periodic")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _expected(every: float, first_now: bool, times: list[float]) -> list[float]:
    """The ticks at which a job of that interval is due, walking the same ticks."""
    due, out = (0.0 if first_now else every), []
    for t in times:
        if t >= due:
            out.append(t)
            due = t + every
    return out


def _next_due(job: Job, times: list[float]) -> float:
    runs = _expected(job.every_s, job.first_now, times)
    return runs[-1] + job.every_s if runs else job.every_s


def test_each_job_runs_at_its_interval_and_a_raising_one_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    ran: dict[str, list[float]] = {"fast": [], "slow": [], "broken": [], "later": []}

    def job(name: str, fail: bool = False) -> Any:
        def fn() -> None:
            ran[name].append(clock.now)
            if fail:
                raise RuntimeError(f"{name} at {clock.now}")

        return fn

    jobs = [
        Job("fast", 1.0, job("fast")),
        Job("slow", 3.0, job("slow")),
        Job("broken", 2.0, job("broken", fail=True)),
        Job("later", 2.0, job("later"), first_now=False),
    ]
    sched = Scheduler(jobs, log, clock=clock)
    times = [i * 0.5 for i in range(15)]
    waits = []
    with caplog.at_level(logging.WARNING, logger=log.name):
        for t in times:
            clock.now = t
            waits.append(sched.tick())
    for j in jobs:
        assert ran[j.name] == _expected(j.every_s, j.first_now, times), j.name
    # Each tick says how long until the next job is due.
    assert waits == [
        min(_next_due(j, times[: i + 1]) for j in jobs) - t for i, t in enumerate(times)
    ]
    assert sched.failures == {"fast": 0, "slow": 0, "broken": len(ran["broken"]), "later": 0}
    broken = [r for r in caplog.records if r.getMessage().startswith("broken failed")]
    assert len(broken) == len(ran["broken"]) > 2
    # The traceback once, for the first failure; the count on every line.
    assert broken[0].exc_info is not None and not any(r.exc_info for r in broken[1:])
    assert [f"({n} in a row)" in r.getMessage() for n, r in enumerate(broken, 1)] == [True] * len(
        broken
    )


def test_an_overrunning_job_runs_once_more_then_at_its_interval() -> None:
    clock = _Clock()
    runs: list[float] = []
    overrun = 3.5  # intervals

    def slow() -> None:
        runs.append(clock.now)
        if len(runs) == 1:
            clock.now += overrun

    sched = Scheduler([Job("slow", 1.0, slow)], log, clock=clock)
    assert sched.tick() == 0.0  # overran: due again at once
    # Once, and then an interval from that run: not one run per interval it missed.
    assert sched.tick() == 1.0
    assert runs == [0.0, overrun]


def test_a_job_returning_false_leaves_the_schedule() -> None:
    clock = _Clock()
    left = [2]

    def ends() -> bool:
        left[0] -= 1
        return left[0] > 0

    sched = Scheduler([Job("ends", 1.0, ends), Job("stays", 1.0, lambda: None)], log, clock=clock)
    for t in range(4):
        clock.now = float(t)
        sched.tick()
    assert [j.name for j in sched.jobs] == ["stays"]
    assert sched.runs == {"ends": 2, "stays": 4}
    only = Scheduler([Job("ends", 1.0, lambda: False)], log, clock=clock)
    assert only.tick() is None  # nothing left: the loop ends


def test_a_database_job_outlives_an_outage(database: str, caplog: pytest.LogCaptureFixture) -> None:
    """The job writes its own row through a TCP relay that the test cuts: its rounds
    fail (logged, counted), the other job keeps its rounds, and after the relay is
    back the same thread writes again."""
    url = make_url(get_settings().database_url)
    relay = Forwarder(url.port or 5432)
    relay.start()
    engine = make_engine(
        url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    )
    sessions = sessionmaker(engine)
    base = f"periodic-{uuid.uuid4().hex[:8]}"
    with get_sessionmaker()() as s:
        tenant = Tenant(name=base)
        s.add(tenant)
        s.commit()
        tenant_id = tenant.id
    written = [0]
    counted = [0]

    def touch() -> None:
        with sessions() as s:
            n = written[0] + 1
            s.execute(update(Tenant).where(Tenant.id == tenant_id).values(name=f"{base}-{n}"))
            s.commit()
            written[0] = n

    def count() -> None:
        counted[0] += 1

    def stored() -> str | None:
        with get_sessionmaker()() as s:
            return s.scalar(select(Tenant.name).where(Tenant.id == tenant_id))

    sched = Scheduler([Job("touch", 0.05, touch), Job("count", 0.05, count)], log)
    try:
        with caplog.at_level(logging.WARNING, logger=log.name), sched:
            wait_for(lambda: written[0] >= 1, timeout=30, interval=0.02)
            relay.stop()
            wait_for(lambda: sched.failures["touch"] >= 3, timeout=30, interval=0.02)
            during = counted[0]
            wait_for(lambda: counted[0] > during, timeout=30, interval=0.02)
            before = written[0]
            relay.start()
            wait_for(lambda: written[0] > before, timeout=30, interval=0.02)
            assert sched.is_alive()
        assert not sched.is_alive()
        assert stored() == f"{base}-{written[0]}"
        msgs = [r for r in caplog.records if r.getMessage().startswith("touch ")]
        first = next(r for r in msgs if "failed (1 in a row)" in r.getMessage())
        assert first.exc_info is not None and "OperationalError" in repr(first.exc_info[1])
        assert any(r.getMessage().startswith("touch recovered after") for r in msgs)
    finally:
        sched.stop()
        relay.stop()
        engine.dispose()


def test_the_worker_schedule_is_its_chores_at_their_intervals() -> None:
    settings = get_settings()
    sched = worker_schedule(get_sessionmaker(), settings, lambda _d: None, lambda _j, _p: None)
    got = {j.name: (j.every_s, j.first_now) for j in sched.jobs}
    assert got == {
        "sweeper": (settings.sweep_interval_s, True),
        "backend refresh": (settings.backend_refresh_interval_s, True),
        "batch advance": (settings.batch_advance_interval_s, True),
        "webhooks": (settings.webhook_poll_interval_s, True),
        "ocr sweep": (settings.sweep_interval_s, True),
    }
    assert not sched.is_alive()  # the worker starts it, on worker_ready


def test_a_heartbeat_beats_until_its_block_ends_through_errors() -> None:
    beats = [0]
    beaten = threading.Event()

    def beat() -> None:
        beats[0] += 1
        if beats[0] >= 4:
            beaten.set()
        if beats[0] % 2:
            raise RuntimeError("every other beat fails")

    with heartbeat("test heartbeat", 0.01, beat, log) as hb:
        assert beaten.wait(timeout=30)
    assert not hb.is_alive()
    assert hb.failures["test heartbeat"] in (0, 1)  # every failure was followed by a beat

    renewed = threading.Event()
    with heartbeat("lease", 0.01, lambda: renewed.set() or False, log) as lease:
        assert renewed.wait(timeout=30)
        wait_for(lambda: not lease.is_alive(), timeout=30, interval=0.01)
    assert lease.runs["lease"] == 1  # False: lost, nothing more to renew
