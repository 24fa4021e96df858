"""Fairness benchmark: one tenant's batch against another tenant's trickle, simulated.

The simulator and deployment of bench/schedule.py, driving the real router and the
real admission policy (`ingestion.capacity.admission.decide`) on a simulated clock. Tenant
`batch` submits `--jobs` jobs at t = 0; tenant `small` submits `--small-jobs` more,
spread evenly over the time the batch's work takes. Longdoc runs twice on the very
same workload: with tenants (fair admission, the service's default
`TENANT_MAX_RUNNING_JOBS` and `TENANT_MAX_KV_SHARE`), and as a single queue (what
admission was before: FIFO for everyone). Printed: each tenant's mean and largest
job wait, the makespan, and fair / FIFO ratios from the same run.

Usage: python bench/fairness.py [--jobs 100] [--small-jobs 10] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.schedule_runs import service_models, simulate
from bench.sim.metrics import _job_wait
from bench.sim.policies import Longdoc
from bench.sim.workload import Workload, WorkloadParams, generate
from ingestion.capacity.admission import Policy
from service.config import Settings
from service.jobs.planner import deployment_backends

TENANTS = ("batch", "small")


def two_tenants(wl: Workload, small: int) -> Workload:
    """The first jobs become tenant `batch`'s, all at 0; the last `small` tenant
    `small`'s, evenly over the span in which the batch's work could be done."""
    n = len(wl.jobs) - small
    jobs = [replace(j, arrival=0.0, tenant="batch") for j in wl.jobs[:n]]
    for k, j in enumerate(wl.jobs[n:]):
        jobs.append(replace(j, arrival=wl.span_s * (k + 1) / (small + 1), tenant="small"))
    return replace(wl, jobs=tuple(jobs))


def run(jobs: int, small: int, seed: int) -> dict[str, Any]:
    settings = Settings()
    backends = deployment_backends(list(settings.deployment))
    models = service_models(backends)
    replicas = {role: sum(b.role == role for b in backends) for role in models}
    params = WorkloadParams(jobs=jobs + small, seed=seed, burstiness=0.0)
    wl = two_tenants(generate(params, backends, models, replicas), small)
    policy = Policy(
        tenant_max_running=settings.tenant_max_running_jobs,
        tenant_max_kv_share=settings.tenant_max_kv_share,
    )
    out: dict[str, Any] = {"jobs": jobs, "small_jobs": small, "seed": seed, "runs": {}}
    for name, fair in (("fair", True), ("fifo", False)):
        sim = simulate(wl, backends, models, Longdoc(policy, tenants=fair))
        row: dict[str, float] = {"makespan_s": max(j.finished_at or 0.0 for j in sim.jobs)}
        for tenant in TENANTS:
            waits = [_job_wait(j) for j in sim.jobs if j.spec.tenant == tenant]
            row[f"{tenant}_mean_wait_s"] = sum(waits) / len(waits)
            row[f"{tenant}_max_wait_s"] = max(waits)
        out["runs"][name] = row
    return out


def table(result: dict[str, Any]) -> str:
    fair, fifo = result["runs"]["fair"], result["runs"]["fifo"]
    keys = [
        "small_mean_wait_s",
        "small_max_wait_s",
        "batch_mean_wait_s",
        "batch_max_wait_s",
        "makespan_s",
    ]
    lines = [
        f"tenant batch: {result['jobs']} jobs at t=0; tenant small: {result['small_jobs']} "
        f"jobs spread over the batch's work; seed {result['seed']}",
        "",
        f"{'':<20} {'fair':>12} {'fifo':>12} {'fair/fifo':>10}",
    ]
    for k in keys:
        ratio = fair[k] / fifo[k] if fifo[k] else float("nan")
        lines.append(f"{k:<20} {fair[k]:>12,.0f} {fifo[k]:>12,.0f} {ratio:>10.3f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--jobs", type=int, default=100, help="tenant batch's jobs")
    ap.add_argument("--small-jobs", type=int, default=10, help="tenant small's jobs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.jobs <= 0 or args.small_jobs <= 0:
        ap.error("--jobs and --small-jobs must be positive")
    result = run(args.jobs, args.small_jobs, args.seed)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
