"""What one simulated run measured, and the lower bound every policy is held to.

Waits. A request waits from the moment it is ready (its job arrived, or the last
answer it combines came back) until vLLM admits it into its running batch, plus
any time back in vLLM's queue after a preemption; time in Longdoc's admission queue
and in vLLM's own queue both count. A job's wait is the wait along its critical
path: the longest wait among its map requests plus, for each reduce level, the
longest wait at that level (a single-request job: its request's wait).

Lower bound on the makespan, the same for every policy (work in `ServiceModel.
work_s` seconds, the compute no batching can avoid):
- per role, total work / replicas, generalised to arrivals: for every arrival time
  a, a + (work of the jobs arriving at or after a) / replicas (a = 0 is total work
  / capacity);
- per job, its arrival plus its critical path run alone (the longest chain of
  map and reduce requests, each at `standalone_s`): no schedule finishes a job
  faster than an idle replica would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.sim.engine import Simulation
from bench.sim.jobs import JobRun
from bench.sim.perf import ServiceModel
from bench.sim.workload import JobSpec, Workload

__all__ = ["LowerBound", "RunResult", "lower_bound", "summarize"]


@dataclass(frozen=True)
class LowerBound:
    value: float
    work_s: dict[str, float]
    """Total work per role, in replica-seconds."""
    by_role: dict[str, float]
    """max over arrival times a of a + work arriving from a on / replicas."""
    total_work_over_capacity: dict[str, float]
    longest_job_alone: float
    """max over jobs of arrival + critical path alone."""


def _critical_path(job: JobSpec, models: Mapping[str, ServiceModel]) -> float:
    done: list[float] = []
    for r in job.requests:  # deps always come earlier in the list
        start = max((done[d] for d in r.deps), default=0.0)
        done.append(start + models[r.role].standalone_s(r.prompt, r.output))
    return max(done)


def lower_bound(
    workload: Workload, models: Mapping[str, ServiceModel], replicas: Mapping[str, int]
) -> LowerBound:
    by_role: dict[str, float] = {}
    totals: dict[str, float] = {}
    for role, n in replicas.items():
        work = [
            (j.arrival, sum(models[role].work_s(r.prompt, r.output) for r in j.requests
                            if r.role == role))
            for j in workload.jobs
        ]  # fmt: skip
        work.sort(key=lambda aw: aw[0], reverse=True)
        best, after = 0.0, 0.0
        for arrival, w in work:
            after += w
            best = max(best, arrival + after / n)
        by_role[role] = best
        totals[role] = after
    alone = max(j.arrival + _critical_path(j, models) for j in workload.jobs)
    value = max([alone, *by_role.values()])
    over_capacity = {role: totals[role] / replicas[role] for role in replicas}
    return LowerBound(value, totals, by_role, over_capacity, alone)


def _job_wait(job: JobRun) -> float:
    levels: dict[int, float] = {}
    depth: list[int] = []
    for r in job.requests:
        level = 1 + max((depth[d] for d in r.spec.deps), default=-1)
        depth.append(level)
        levels[level] = max(levels.get(level, 0.0), r.wait)
    return sum(levels.values())


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value some job actually saw."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class RunResult:
    policy: str
    makespan_s: float
    mean_wait_s: float
    p99_wait_s: float
    largest_job_wait_s: float
    largest_job_tokens: int
    kv_utilisation: dict[str, float]
    """Per role: time-averaged share of each replica's usable pool holding KV over
    the makespan, averaged over the role's replicas."""
    preemptions: int
    recomputed_tokens: int
    makespan_over_lb: float
    jobs_completed: int
    jobs: int
    per_replica: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(sim: Simulation, policy: str, lb: LowerBound) -> RunResult:
    jobs = sim.jobs
    start = min(j.spec.arrival for j in jobs)
    finished = [j for j in jobs if j.finished_at is not None]
    makespan = max(j.finished_at for j in finished if j.finished_at is not None) - start
    waits = [_job_wait(j) for j in jobs]
    largest = max(jobs, key=lambda j: (j.spec.doc_tokens, -j.spec.id))
    per_replica = {}
    for s in sim.servers:
        per_replica[s.id] = {
            "kv_utilisation": s.kv_byte_seconds / (s.usable * makespan),
            "peak_kv_fraction": s.peak_used / s.usable,
            "busy_fraction": s.busy_s / makespan,
            "steps": s.steps,
            "preemptions": s.preemptions,
            "recomputed_tokens": s.recomputed_tokens,
        }
    shares: dict[str, list[float]] = {}
    for s in sim.servers:
        shares.setdefault(s.role, []).append(per_replica[s.id]["kv_utilisation"])
    kv_by_role = {role: sum(v) / len(v) for role, v in shares.items()}
    return RunResult(
        policy=policy,
        makespan_s=makespan,
        mean_wait_s=sum(waits) / len(waits),
        p99_wait_s=_percentile(waits, 99),
        largest_job_wait_s=_job_wait(largest),
        largest_job_tokens=largest.spec.doc_tokens,
        kv_utilisation=kv_by_role,
        preemptions=sum(s.preemptions for s in sim.servers),
        recomputed_tokens=sum(s.recomputed_tokens for s in sim.servers),
        makespan_over_lb=makespan / lb.value,
        jobs_completed=len(finished),
        jobs=len(jobs),
        per_replica=per_replica,
    )
