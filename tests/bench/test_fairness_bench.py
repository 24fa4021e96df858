"""The two-tenant benchmark on a small workload: it drives the real policy with
tenants, and the small tenant waits less than in the single FIFO queue."""

from __future__ import annotations

import pytest

from bench import fairness


def test_the_small_tenant_waits_less_with_fair_admission(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = fairness.run(jobs=20, small=3, seed=1)
    fair, fifo = result["runs"]["fair"], result["runs"]["fifo"]
    assert fair["small_mean_wait_s"] < fifo["small_mean_wait_s"]
    assert fairness.main(["--jobs", "6", "--small-jobs", "2"]) == 0
    assert "small_mean_wait_s" in capsys.readouterr().out
