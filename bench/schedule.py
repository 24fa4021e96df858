"""Scheduling benchmark: Longdoc's KV admission against admission-free vLLM, simulated.

A discrete-event simulation on a simulated clock that drives the project's own
code: every job is routed by `ingestion.capacity.router.plan_route` against the deployment in
settings (`settings.deployment`, by default the paper deployment: Gemma 4 31B on one
H100 80GB, Llama 4 Scout on 8xH100 at the 1M context vLLM published for it, KV pools
derived from the registry), turned into router backends by the same
`service.jobs.planner.deployment_backends` that `longdoc route` uses; Longdoc's requests
wait for `ingestion.capacity.admission.decide`, the policy the KV ledger applies in the
database, with the simulated `now`.

Policies, all over the same plans, replicas and service model:
- longdoc: a request starts on a replica only when the admission policy gives it a
  lease for its planned KV bytes; the lease is freed when the request finishes.
- fifo (a): every request straight into vLLM when ready (the replica with the fewest
  outstanding requests), vLLM's first-come-first-served scheduler, no admission.
- round_robin (b): the same, replicas of the role taken in turn. With the paper
  deployment's single replica per role it is the same schedule as fifo; `--replicas`
  adds replicas.
- shortest_first (c): straight into vLLM run with `--scheduling-policy priority`,
  priority = planned tokens (shortest admitted first, longest preempted first).
The baselines send without any KV check, so vLLM preempts whenever the pool runs out;
Longdoc runs on the very same vLLM model, and its preemptions are counted by the same
check (bench/sim/server.py), not assumed to be zero.

The vLLM model (bench/sim/server.py): chunked prefill with a token budget per step,
running requests first, KV blocks allocated as tokens are processed (the registry's
per-group block rule with the step's tokens in flight, so sliding and chunked layers
stay bounded), recompute preemption of the most recently admitted request (priority
mode: the lowest-priority one) when a running request cannot get its blocks; a
preemption is counted with the tokens it had computed (the tokens recomputed).
vLLM's prefix cache is not modelled: a readmitted victim whose freed blocks were not
reused meanwhile would find that prefix cached and skip recomputing it, so the
baselines' recomputed tokens (and the time they cost) are an upper bound; the
preemption counts stand either way. Reduces keep their job's place in Longdoc's
arrival order (as if the child jobs were inserted with the plan); ordering them by
readiness instead changes the default run's waits by under 2%.

Service time (bench/sim/perf.py): one step costs max(compute, memory) per GPU.
Compute = prompt and output tokens at the linear-layer rate plus the attention FLOPs
of every (query, key) pair (full layers see the whole context: the quadratic term;
sliding and chunked layers their window). Memory = the weights read once per step
plus the KV every decoding request reads. So a request alone takes prompt tokens /
prefill throughput plus output tokens / decode rate, with the attention term for long
prompts, and concurrent requests share steps (batching) rather than time slices.
Constants: H100 SXM datasheet peaks (989 TFLOPS bf16, 1,979 fp8, 3.35 TB/s) times
efficiencies that are assumptions (linear layers 40% of fp8 peak for Gemma, 25% of
bf16 peak for Scout's MoE, attention 50%, HBM 80%), parameter counts from the model
cards, weights as in service/config.py. That gives about 12.9K prefill tokens/s and
70 decode tokens/s alone for Gemma 4 31B on one H100, 58K and 76 for Scout on 8.
They are the same for every policy: the comparison is about scheduling.

Lower bound (bench/sim/metrics.py): work = compute seconds (what no batching avoids),
per role pool: total work / replicas, tightened for arrivals (for every arrival time
a: a + work arriving from a on / replicas), and no job sooner than its arrival plus
its own map-reduce critical path on an idle replica. The memory-bound part of
decoding (weights read every step) is not work, so a schedule that decodes in small
batches pays it on top of the bound.

Workload (bench/sim/workload.py): `--jobs` documents, log-uniform from 1K to 8M
tokens, the same count for both tokenizers (an assumption), a 200-token task prompt,
4,096 output tokens budgeted and log-uniform 128-4,096 actually generated;
`--burstiness` of the jobs arrive in bursts of `--burst-size`, the rest uniformly,
over a span in which the busiest role gets `--load` times the work it can do.

Metrics (bench/sim/metrics.py): makespan (first arrival to last completion), mean and
p99 job wait (ready until admitted into vLLM's running batch, along the job's
critical path, requeues after preemption included), the wait of the largest job, KV
utilisation per role (time-averaged share of the pool holding KV blocks, whatever
they hold: a baseline's thrashing counts as use), preemptions and tokens recomputed,
makespan / lower bound. Ratios in the table are against fifo measured in the same
run. The JSON adds per-replica figures and, for Longdoc, the leased share of the
pools and which admission rule placed each request.

Deterministic for a given `--seed` (the simulation has no wall-clock input).

Usage: python bench/schedule.py [--jobs 300] [--seed 0] [--burstiness 0.3]
       [--burst-size 20] [--load 1.0] [--replicas gemma=2,scout=1]
       [--max-head-wait S] [--policy NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as `python -m` would.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sim.engine import Dispatcher, Simulation
from bench.sim.metrics import LowerBound, RunResult, lower_bound, summarize
from bench.sim.perf import ServiceModel, describe
from bench.sim.policies import Fifo, Longdoc, RoundRobin, ShortestFirst
from bench.sim.server import Server
from bench.sim.workload import Workload, WorkloadParams, generate
from ingestion.capacity.admission import Policy
from ingestion.capacity.router import Backend
from service.config import Settings
from service.deployment import DeploymentReplica
from service.jobs.planner import deployment_backends

POLICIES = ("longdoc", "fifo", "round_robin", "shortest_first")
BASELINE = "fifo"


@dataclass
class Report:
    params: WorkloadParams
    deployment: list[DeploymentReplica]
    workload: Workload
    lb: LowerBound
    models: dict[str, ServiceModel]
    results: list[RunResult]
    seconds: float


def dispatcher(name: str, policy: Policy | None = None) -> Dispatcher:
    if name == "longdoc":
        return Longdoc(policy)
    if name == "fifo":
        return Fifo()
    if name == "round_robin":
        return RoundRobin()
    if name == "shortest_first":
        return ShortestFirst()
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")


def _models(backends: Sequence[Backend]) -> dict[str, ServiceModel]:
    models: dict[str, ServiceModel] = {}
    for b in backends:
        if b.kv_cache_bytes is None:
            raise ValueError(f"{b.id}: the deployment gives no KV pool; the benchmark needs one")
        if b.role in models and models[b.role].model_id != b.model:
            raise ValueError(f"role {b.role} mixes models; the benchmark needs one per role")
        models.setdefault(b.role, ServiceModel(b.model, b.kv))
    return models


def simulate(
    workload: Workload,
    backends: Sequence[Backend],
    models: dict[str, ServiceModel],
    d: Dispatcher,
) -> Simulation:
    servers = [
        Server(b.id, b.role, models[b.role], b.kv_cache_bytes or 0, priority=d.priority_servers)
        for b in backends
    ]
    sim = Simulation(workload.jobs, servers, d)
    sim.run()
    return sim


def run(
    params: WorkloadParams,
    deployment: list[DeploymentReplica],
    policies: Sequence[str] = POLICIES,
    admission_policy: Policy | None = None,
) -> Report:
    t0 = time.perf_counter()
    backends = deployment_backends(deployment)
    models = _models(backends)
    replicas = {role: sum(b.role == role for b in backends) for role in models}
    workload = generate(params, backends, models, replicas)
    lb = lower_bound(workload, models, replicas)
    results = []
    for name in policies:
        d = dispatcher(name, admission_policy)
        sim = simulate(workload, backends, models, d)
        result = summarize(sim, name, lb)
        if isinstance(d, Longdoc):
            result.extra = {
                "admission_decisions": d.decisions,
                "decisions_with_aged_head": d.aged_decisions,
                "placements_by_rule": dict(d.rules),
                "peak_leased_fraction": d.peak_leased_fraction,
                "leased_fraction": d.leased_fraction(result.makespan_s),
            }
        results.append(result)
    return Report(params, deployment, workload, lb, models, results, time.perf_counter() - t0)


def with_replicas(deployment: list[DeploymentReplica], spec: str) -> list[DeploymentReplica]:
    """`gemma=2,scout=1`: replica counts per role, replacing the settings' ones."""
    counts: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        role, _, n = part.partition("=")
        if not n.isdigit() or int(n) <= 0:
            raise ValueError(f"bad --replicas entry {part!r}: use ROLE=N with N >= 1")
        counts[role] = int(n)
    unknown = set(counts) - {d.role for d in deployment}
    if unknown:
        raise ValueError(f"--replicas names roles not in the deployment: {sorted(unknown)}")
    return [
        d.model_copy(update={"replicas": counts[d.role]}) if d.role in counts else d
        for d in deployment
    ]


# -- output ----------------------------------------------------------------------------


def _ratio(value: float, base: float | None) -> str:
    if base is None:
        return "    -"
    if base == 0:
        return "  -  " if value == 0 else "  inf"
    return f"{value / base:5.2f}"


def to_json(report: Report) -> dict[str, Any]:
    wl = report.workload
    base = next((r for r in report.results if r.policy == BASELINE), None)
    results = []
    for r in report.results:
        entry = r.as_dict()
        if base is not None:
            entry["vs_fifo"] = {
                k: (getattr(r, k) / getattr(base, k) if getattr(base, k) else None)
                for k in ("makespan_s", "mean_wait_s", "p99_wait_s", "largest_job_wait_s")
            }
        results.append(entry)
    roles: dict[str, int] = {}
    for j in wl.jobs:
        for q in j.requests:
            roles[q.role] = roles.get(q.role, 0) + 1
    return {
        "params": report.params.__dict__,
        "deployment": [d.model_dump() for d in report.deployment],
        "workload": {
            "jobs": len(wl.jobs),
            "map_reduce_jobs": sum(j.kind == "map_reduce" for j in wl.jobs),
            "requests_by_role": roles,
            "arrival_span_s": wl.span_s,
            "largest_doc_tokens": max(j.doc_tokens for j in wl.jobs),
        },
        "service_model": {role: describe(m) for role, m in report.models.items()},
        "lower_bound": report.lb.__dict__,
        "results": results,
        "seconds": report.seconds,
    }


def table(report: Report) -> str:
    wl, lb = report.workload, report.lb
    fifo = next((r for r in report.results if r.policy == BASELINE), None)
    base: dict[str, float] = {}
    if fifo is not None:
        base = {"make": fifo.makespan_s, "mean": fifo.mean_wait_s, "p99": fifo.p99_wait_s}
    lines = []
    deploy = "; ".join(
        f"{d.role}: {d.model} x{d.replicas} (tp {d.tp}, max_model_len {d.max_model_len:,}, "
        f"KV pool {(d.kv_cache_bytes or 0) / 2**30:.2f} GiB/GPU)"
        for d in report.deployment
    )
    lines.append(f"deployment: {deploy}")
    p = report.params
    mr = sum(j.kind == "map_reduce" for j in wl.jobs)
    n_req = sum(len(j.requests) for j in wl.jobs)
    lines.append(
        f"workload: {p.jobs} jobs ({mr} map-reduce, {n_req} requests), {p.min_tokens:,}-"
        f"{p.max_tokens:,} tokens log-uniform, burstiness {p.burstiness} (bursts of "
        f"{p.burst_size}), load {p.load}, arrivals over {wl.span_s:,.0f} s, seed {p.seed}"
    )
    parts = ", ".join(
        f"{role} {lb.total_work_over_capacity[role]:,.0f} s work/capacity "
        f"({lb.by_role[role]:,.0f} s with arrivals)"
        for role in lb.by_role
    )
    lines.append(
        f"lower bound: {lb.value:,.0f} s = max({parts}, longest job alone "
        f"{lb.longest_job_alone:,.0f} s)"
    )
    roles = list(report.models)
    kv_head = "KV " + "/".join(roles)
    kv_w = max(len(kv_head), 6 * len(roles))

    def _kv(r: RunResult) -> str:
        return "/".join(f"{r.kv_utilisation[role]:.0%}" for role in roles)

    head = (
        f"{'policy':<15} {'makespan s':>11} {'xfifo':>5} {'/LB':>5} {'mean wait s':>11} "
        f"{'xfifo':>5} {'p99 wait s':>10} {'xfifo':>5} {'largest wait s':>14} {kv_head:>{kv_w}} "
        f"{'preempt':>7} {'recomputed tok':>14} {'done':>7}"
    )
    lines += ["", head, "-" * len(head)]
    for r in report.results:
        lines.append(
            f"{r.policy:<15} {r.makespan_s:>11,.0f} {_ratio(r.makespan_s, base.get('make'))} "
            f"{r.makespan_over_lb:>5.2f} {r.mean_wait_s:>11,.0f} "
            f"{_ratio(r.mean_wait_s, base.get('mean'))} {r.p99_wait_s:>10,.0f} "
            f"{_ratio(r.p99_wait_s, base.get('p99'))} {r.largest_job_wait_s:>14,.0f} "
            f"{_kv(r):>{kv_w}} {r.preemptions:>7,} {r.recomputed_tokens:>14,} "
            f"{r.jobs_completed:>3}/{r.jobs:<3}"
        )
    largest = max(j.doc_tokens for j in wl.jobs)
    lines.append("")
    lines.append(
        f"largest job: {largest:,} tokens. KV: time-averaged share of the pool holding KV "
        f"blocks, per role. Simulated in {report.seconds:.1f} s."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    d = WorkloadParams()
    ap.add_argument("--jobs", type=int, default=d.jobs)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--burstiness", type=float, default=d.burstiness,
                    help="share of jobs that arrive in bursts (0-1)")  # fmt: skip
    ap.add_argument("--burst-size", type=int, default=d.burst_size)
    ap.add_argument("--load", type=float, default=d.load,
                    help="offered work / what the busiest role can do over the span")  # fmt: skip
    ap.add_argument("--max-output-tokens", type=int, default=d.max_output_tokens)
    ap.add_argument("--replicas", default="", help="replicas per role, e.g. gemma=2,scout=1")
    ap.add_argument("--max-head-wait", type=float, default=Policy().max_head_wait_s,
                    help="admission aging bound (Policy.max_head_wait_s), seconds")  # fmt: skip
    ap.add_argument("--policy", action="append", choices=POLICIES,
                    help="run only these (repeatable); fifo is the ratio baseline")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    try:
        params = WorkloadParams(
            jobs=args.jobs,
            seed=args.seed,
            burstiness=args.burstiness,
            burst_size=args.burst_size,
            load=args.load,
            max_output_tokens=args.max_output_tokens,
        )
        deployment = with_replicas(list(Settings().deployment), args.replicas)
    except ValueError as exc:
        ap.error(str(exc))
    policies = args.policy or list(POLICIES)
    report = run(params, deployment, policies, Policy(max_head_wait_s=args.max_head_wait))
    if args.json:
        print(json.dumps(to_json(report), indent=2, default=str))
    else:
        print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
