"""The scheduling benchmark on a small workload: properties of the schedules it
simulates, and that it really drives the router and the admission policy."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import schedule, schedule_runs
from bench.sim.metrics import RunResult
from bench.sim.perf import ServiceModel
from bench.sim.workload import WorkloadParams
from ingestion.capacity import admission
from ingestion.capacity.kv import KvConfig
from service.config import Settings
from service.deployment import DeploymentReplica

# Small, and loaded enough (half the jobs in bursts, 1.5x the work the span allows)
# that vLLM without admission runs out of KV blocks.
SMALL = WorkloadParams(jobs=40, seed=3, load=1.5, burstiness=0.5)
GEMMA = "google/gemma-4-31B-it"
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"


@pytest.fixture(scope="module")
def deployment() -> list[DeploymentReplica]:
    return list(Settings().deployment)


@pytest.fixture(scope="module")
def report(deployment: list[DeploymentReplica]) -> schedule_runs.Report:
    return schedule_runs.run(SMALL, deployment)


def _by_policy(report: schedule_runs.Report) -> dict[str, RunResult]:
    return {r.policy: r for r in report.results}


def test_the_workload_spans_the_router_plans(report: schedule_runs.Report) -> None:
    kinds = {j.kind for j in report.workload.jobs}
    roles = {r.role for j in report.workload.jobs for r in j.requests}
    assert kinds == {"single", "map_reduce"} and roles == {"gemma", "scout"}
    sizes = [j.doc_tokens for j in report.workload.jobs]
    assert min(sizes) >= SMALL.min_tokens and max(sizes) <= SMALL.max_tokens


def test_every_job_completes_under_every_policy(report: schedule_runs.Report) -> None:
    assert [r.policy for r in report.results] == list(schedule_runs.POLICIES)
    for r in report.results:
        assert r.jobs_completed == r.jobs == SMALL.jobs, r.policy


def test_longdoc_never_preempts(report: schedule_runs.Report) -> None:
    longdoc = _by_policy(report)["longdoc"]
    assert longdoc.preemptions == 0 and longdoc.recomputed_tokens == 0
    assert longdoc.extra["peak_leased_fraction"] <= 1.0


def test_vllm_without_admission_preempts_when_kv_runs_out(report: schedule_runs.Report) -> None:
    fifo = _by_policy(report)["fifo"]
    assert fifo.preemptions > 0 and fifo.recomputed_tokens > 0
    # Blocks ran out somewhere: that is what the preemptions are for.
    assert max(v["peak_kv_fraction"] for v in fifo.per_replica.values()) > 0.99


def test_no_replica_ever_holds_more_kv_than_its_pool(report: schedule_runs.Report) -> None:
    for r in report.results:
        for replica, values in r.per_replica.items():
            assert values["peak_kv_fraction"] <= 1.0, (r.policy, replica)


def test_no_policy_beats_the_lower_bound(report: schedule_runs.Report) -> None:
    lb = report.lb
    assert lb.value >= max(lb.total_work_over_capacity.values())
    for r in report.results:
        assert r.makespan_s >= lb.value, r.policy
        assert r.makespan_over_lb == pytest.approx(r.makespan_s / lb.value)


def test_one_replica_per_role_makes_round_robin_fifo(report: schedule_runs.Report) -> None:
    by = _by_policy(report)
    assert by["round_robin"].makespan_s == by["fifo"].makespan_s


def test_same_seed_same_result(deployment: list[DeploymentReplica]) -> None:
    params = WorkloadParams(jobs=12, seed=7)
    a = schedule_runs.run(params, deployment, ["longdoc", "fifo"])
    b = schedule_runs.run(params, deployment, ["longdoc", "fifo"])
    assert [r.as_dict() for r in a.results] == [r.as_dict() for r in b.results]
    other = schedule_runs.run(WorkloadParams(jobs=12, seed=8), deployment, ["fifo"])
    assert other.workload.jobs != a.workload.jobs


# -- the real admission policy ----------------------------------------------------------


@pytest.fixture
def decide_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    calls: list[float] = []
    real = admission.decide

    def spy(*args: Any, **kwargs: Any) -> admission.Decision:
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(admission, "decide", spy)
    yield calls


def test_longdoc_admits_through_admission_decide_on_the_simulated_clock(
    deployment: list[DeploymentReplica], decide_calls: list[float]
) -> None:
    r = schedule_runs.run(SMALL, deployment, ["longdoc"]).results[0]
    assert len(decide_calls) == r.extra["admission_decisions"] > 0
    assert all(0.0 <= now <= r.makespan_s for now in decide_calls)
    assert decide_calls == sorted(decide_calls)


def test_the_aging_bound_changes_the_largest_jobs_wait(
    deployment: list[DeploymentReplica],
) -> None:
    def run(bound: float) -> RunResult:
        policy = admission.Policy(max_head_wait_s=bound)
        return schedule_runs.run(SMALL, deployment, ["longdoc"], policy).results[0]

    strict, never = run(0.0), run(math.inf)
    assert strict.extra["decisions_with_aged_head"] > 0
    assert never.extra["decisions_with_aged_head"] == 0
    assert strict.largest_job_wait_s != never.largest_job_wait_s
    assert strict.preemptions == never.preemptions == 0


# -- the service model -------------------------------------------------------------------


def _models() -> list[ServiceModel]:
    return [ServiceModel(GEMMA, KvConfig()), ServiceModel(SCOUT, KvConfig(tp=8))]


@settings(max_examples=200, deadline=None)
@given(tokens=st.integers(1, 1_000_000), in_flight=st.integers(1, 16_384))
def test_running_occupancy_is_ingestion_kv_and_never_above_the_reservation(
    tokens: int, in_flight: int
) -> None:
    for m in _models():
        reservation = m.layout.bytes_per_request(tokens)
        # At the server's own in-flight count it is the router's reservation, exactly.
        assert m.occupancy(tokens, m.layout.config.in_flight_tokens) == reservation
        assert m.occupancy(tokens, in_flight) <= reservation


@settings(max_examples=100, deadline=None)
@given(
    cuts=st.lists(st.integers(1, 2_000_000), min_size=1, max_size=8),
    output=st.integers(1, 4096),
)
def test_work_is_the_same_however_the_tokens_are_batched(cuts: list[int], output: int) -> None:
    for m in _models():
        prompt = sum(cuts)
        context, total = 0, 0.0
        for n in [*cuts, *([1] * min(output, 50))]:
            total += m.compute_s(context, n)
            context += n
        assert total == pytest.approx(m.work_s(prompt, min(output, 50)), rel=1e-9)
        assert m.standalone_s(prompt, output) >= m.work_s(prompt, output)


# -- the command line --------------------------------------------------------------------


def test_cli_prints_a_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert schedule.main(["--jobs", "6", "--seed", "1", "--policy", "fifo"]) == 0
    table = capsys.readouterr().out
    assert "lower bound" in table and "fifo" in table
    assert schedule.main(["--jobs", "6", "--seed", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in data["results"]] == list(schedule_runs.POLICIES)
    assert data["results"][1]["vs_fifo"]["makespan_s"] == 1.0


def test_cli_replicas_flag(deployment: list[DeploymentReplica]) -> None:
    more = schedule.with_replicas(deployment, "gemma=2")
    assert [d.replicas for d in more] == [2, 1]
    with pytest.raises(ValueError, match="ROLE=N"):
        schedule.with_replicas(deployment, "gemma=0")
    with pytest.raises(ValueError, match="not in the deployment"):
        schedule.with_replicas(deployment, "mistral=1")
