"""Every policy of bench/schedule.py over one workload: the deployment turned into
router backends (as `longdoc route` does), one service model per role, the workload
routed on them, its lower bound, then one simulation per policy. bench/fairness.py
runs its own workloads on the same pieces."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.sim.engine import Dispatcher, Simulation
from bench.sim.metrics import LowerBound, RunResult, lower_bound, summarize
from bench.sim.perf import ServiceModel
from bench.sim.policies import Fifo, Longdoc, RoundRobin, ShortestFirst
from bench.sim.server import Server
from bench.sim.workload import Workload, WorkloadParams, generate
from ingestion.capacity.admission import Policy
from ingestion.capacity.router import Backend
from service.deployment import DeploymentReplica
from service.jobs.planner import deployment_backends

POLICIES = ("longdoc", "fifo", "round_robin", "shortest_first")


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


def service_models(backends: Sequence[Backend]) -> dict[str, ServiceModel]:
    """One service model per role, of its backends' model and KV layout; a role must
    serve one model, each backend with a KV pool."""
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
    models = service_models(backends)
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
