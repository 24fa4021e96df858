"""The bucketing of a tenant's backlog onto broker priority steps (pure)."""

from __future__ import annotations

import pytest

from ingestion.task_priority import PRIORITY_STEPS, job_priority


def test_small_backlogs_go_first_big_ones_last() -> None:
    got = {n: job_priority(n, 0.0, 900.0) for n in (0, 1, 3, 4, 15, 16, 63, 64, 500, 10**6)}
    assert got == {0: 0, 1: 0, 3: 0, 4: 3, 15: 3, 16: 6, 63: 6, 64: 9, 500: 9, 10**6: 9}
    # Never worse for a smaller backlog, and always one of the transport's steps.
    order = [job_priority(n, 0.0, 900.0) for n in range(2000)]
    assert order == sorted(order)
    assert set(order) == set(PRIORITY_STEPS)


def test_an_aged_job_goes_at_the_top_whatever_its_backlog() -> None:
    assert job_priority(500, 899.0, 900.0) == PRIORITY_STEPS[-1]
    assert job_priority(500, 900.0, 900.0) == PRIORITY_STEPS[0]


def test_other_steps_and_bases() -> None:
    assert [job_priority(n, 0.0, 9e9, steps=(0, 5), base=2) for n in (1, 2, 100)] == [0, 5, 5]
    assert job_priority(10**9, 0.0, 9e9, steps=(7,)) == 7
    with pytest.raises(ValueError):
        job_priority(1, 0.0, 1.0, steps=())
    with pytest.raises(ValueError):
        job_priority(1, 0.0, 1.0, base=1)
