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

The runs themselves are bench/schedule_runs.py; what is printed, bench/schedule_output.py.

Usage: python bench/schedule.py [--jobs 300] [--seed 0] [--burstiness 0.3]
       [--burst-size 20] [--load 1.0] [--replicas gemma=2,scout=1]
       [--max-head-wait S] [--policy NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as `python -m` would.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.schedule_output import table, to_json
from bench.schedule_runs import POLICIES, run
from bench.sim.workload import WorkloadParams
from ingestion.capacity.admission import Policy
from service.config import Settings
from service.deployment import DeploymentReplica


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
