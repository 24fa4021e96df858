"""What bench/schedule.py prints of a run: the table, ratios against fifo measured in
the same run, or the JSON with the per-replica figures and Longdoc's admission."""

from __future__ import annotations

from typing import Any

from bench.schedule_runs import Report
from bench.sim.metrics import RunResult
from bench.sim.perf import describe

BASELINE = "fifo"


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
