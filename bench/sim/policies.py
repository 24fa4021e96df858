"""The four ways to get requests onto the replicas.

Longdoc waits for a KV lease from the real admission policy; the three baselines
send every request to a vLLM server the moment it is ready, with no KV check, and
leave the rest to vLLM's own scheduler (so they preempt whenever the pool runs out).
"""

from __future__ import annotations

from collections import Counter

from bench.sim.engine import Dispatcher, Simulation
from bench.sim.jobs import Req
from bench.sim.server import Server
from ingestion.capacity import admission

__all__ = ["Fifo", "Longdoc", "RoundRobin", "ShortestFirst"]


def _candidates(sim: Simulation, req: Req) -> list[Server]:
    return [s for s in sim.by_role[req.role] if s.id in req.spec.replicas]


class Fifo(Dispatcher):
    """(a) Straight into vLLM: each request to the replica with the fewest requests
    outstanding (a load balancer's usual rule; with one replica per role, simply that
    replica), where vLLM runs them first come, first served."""

    name = "fifo"

    def on_ready(self, req: Req, now: float) -> None:
        server = min(_candidates(self.sim, req), key=lambda s: (s.outstanding, s.id))
        self.sim.submit(req, server)


class RoundRobin(Dispatcher):
    """(b) Straight into vLLM, replicas of the role taken in turn."""

    name = "round_robin"

    def __init__(self) -> None:
        self._next: Counter[str] = Counter()

    def on_ready(self, req: Req, now: float) -> None:
        servers = _candidates(self.sim, req)
        server = servers[self._next[req.role] % len(servers)]
        self._next[req.role] += 1
        self.sim.submit(req, server)


class ShortestFirst(Fifo):
    """(c) Straight into vLLM with `--scheduling-policy priority`, priority = the
    request's planned tokens: the shortest waiting request is admitted first and the
    longest running one is preempted first."""

    name = "shortest_first"
    priority_servers = True


class Longdoc(Dispatcher):
    """Requests wait for `ingestion.capacity.admission.decide`, fed as service/ledger/ feeds
    it: each replica's KV capacity (the figure discovery stores for the ledger), the
    leases held there with their expected ends, the role's waiting requests in
    arrival order with their planned KV bytes and estimated durations. A placement
    takes a lease and sends the request to that replica; the lease is released when
    the request finishes. Decisions run when a request becomes ready, when one
    finishes, and every `tick_s` while any wait (the worker's poll), always with the
    simulated `now`."""

    name = "longdoc"

    def __init__(
        self, policy: admission.Policy | None = None, tick_s: float = 5.0, *, tenants: bool = True
    ) -> None:
        self.policy = policy or admission.Policy()
        # False: every job as one tenant's, the single FIFO queue admission had before.
        self.tenants = tenants
        self.tick_s = tick_s
        self._waiting: dict[str, dict[str, tuple[admission.WaitingJob, Req]]] = {}
        self._leases: dict[str, dict[str, admission.Lease]] = {}
        self.rules: Counter[str] = Counter()
        self.decisions = 0
        self.aged_decisions = 0
        self.peak_leased_fraction = 0.0
        self._leased: dict[str, int] = {}
        self._lease_byte_seconds: dict[str, float] = {}
        self._since = 0.0

    def bind(self, sim: Simulation) -> None:
        super().bind(sim)
        self._servers = {s.id: s for s in sim.servers}
        self._leases = {s.id: {} for s in sim.servers}
        self._leased = {s.id: 0 for s in sim.servers}
        self._lease_byte_seconds = {s.id: 0.0 for s in sim.servers}

    def on_ready(self, req: Req, now: float) -> None:
        # What a worker knows before the request runs: the plan's tokens and output
        # budget, priced alone on an idle replica. Overestimating the output keeps the
        # backfill rule safe; concurrency makes real durations longer, which the
        # policy handles by treating overrun leases as ending now.
        model = self.sim.by_role[req.role][0].model
        est = model.standalone_s(req.spec.planned_input, req.spec.max_output)
        tenant = req.job.spec.tenant if self.tenants else ""
        job = admission.WaitingJob(req.id, req.seq, req.kv_bytes, now, est, tenant=tenant)
        self._waiting.setdefault(req.role, {})[req.id] = (job, req)
        self._admit(req.role, now)

    def on_finish(self, req: Req, now: float) -> None:
        assert req.server is not None
        self._account(now)
        lease = self._leases[req.server.id].pop(req.id)
        self._leased[req.server.id] -= lease.kv_bytes
        self._admit(req.role, now)

    def tick(self, now: float) -> None:
        for role in list(self._waiting):
            self._admit(role, now)

    def holding(self) -> bool:
        return any(self._waiting.values())

    def _admit(self, role: str, now: float) -> None:
        waiting = self._waiting.get(role)
        if not waiting:
            return
        servers = self.sim.by_role[role]
        replicas = [
            admission.Replica(s.id, s.kv_cache_bytes, tuple(self._leases[s.id].values()))
            for s in servers
        ]
        decision = admission.decide(replicas, [j for j, _ in waiting.values()], now, self.policy)
        self.decisions += 1
        self.aged_decisions += decision.aged
        assert not decision.oversize, "the router only plans requests that fit a replica"
        self._account(now)
        for p in decision.placements:
            job, req = waiting.pop(p.job_id)
            # What service/ledger/ writes: the job's bytes, expected to end at now +
            # its estimate.
            lease = admission.Lease(job.kv_bytes, now + job.est_duration_s, job.tenant)
            self._leases[p.replica_id][req.id] = lease
            self._leased[p.replica_id] += lease.kv_bytes
            self.rules[p.rule.value] += 1
            self.sim.submit(req, self._servers[p.replica_id])
        for s in servers:
            self.peak_leased_fraction = max(
                self.peak_leased_fraction, self._leased[s.id] / s.kv_cache_bytes
            )

    def _account(self, now: float) -> None:
        for sid, leased in self._leased.items():
            self._lease_byte_seconds[sid] += leased * (now - self._since)
        self._since = now

    def leased_fraction(self, makespan: float) -> dict[str, float]:
        """Per role, the time-averaged share of each replica's capacity under lease
        (what was reserved; KV utilisation is what vLLM actually held)."""
        shares: dict[str, list[float]] = {}
        for s in self.sim.servers:
            share = self._lease_byte_seconds[s.id] / (s.kv_cache_bytes * makespan)
            shares.setdefault(s.role, []).append(share)
        return {role: sum(v) / len(v) for role, v in shares.items()}
