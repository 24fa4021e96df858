"""What a decision in progress keeps: each replica's free bytes and expected ends, and
what each tenant holds and still has waiting, in the order rule 2 and the fair order
of the package docstring read them."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ingestion.capacity.admission.order import pick
from ingestion.capacity.admission.values import Policy, Replica, WaitingJob


@dataclass
class ReplicaState:
    id: str
    accepting: bool
    free: int
    capacity: int
    ends: list[tuple[float, int]] = field(default_factory=list)


class TenantBook:
    """What each tenant holds on the role, and which of its jobs are still to go
    (`jobs` come in the order of `order.queue_key`)."""

    def __init__(self, replicas: Sequence[Replica], jobs: list[WaitingJob], policy: Policy) -> None:
        self.policy = policy
        self.bytes: Counter[str] = Counter()
        self.leases: Counter[str] = Counter()
        self.on: Counter[tuple[str, str]] = Counter()  # (tenant, replica) -> bytes
        for r in replicas:
            for lease in r.leases:
                if lease.tenant is not None:
                    self.take(lease.tenant, r.id, lease.kv_bytes)
        self.queues: dict[str, deque[WaitingJob]] = {}
        for job in jobs:
            self.queues.setdefault(job.tenant, deque()).append(job)
        self.left = Counter({t: len(q) for t, q in self.queues.items()})
        self.limited: set[str] = set()

    def take(self, tenant: str, replica: str, kv_bytes: int) -> None:
        self.bytes[tenant] += kv_bytes
        self.leases[tenant] += 1
        self.on[tenant, replica] += kv_bytes

    def next(self, now: float) -> WaitingJob | None:
        heads = [q[0] for q in self.queues.values()]
        if not heads:
            return None
        job = pick(heads, now, self.policy, lambda t: (self.bytes[t], self.leases[t]))
        self.queues[job.tenant].popleft()
        if not self.queues[job.tenant]:
            del self.queues[job.tenant]
        return job

    def at_running_limit(self, tenant: str) -> bool:
        limit = self.policy.tenant_max_running
        return limit is not None and self.leases[tenant] >= limit

    def hold_back(self, tenant: str) -> None:
        self.limited.add(tenant)
        self.queues.pop(tenant, None)

    def others_wait(self, tenant: str) -> bool:
        """Another tenant has jobs left that its running limit lets start."""
        return any(n and t != tenant and not self.at_running_limit(t) for t, n in self.left.items())

    def within_share(self, tenant: str, s: ReplicaState, kv_bytes: int) -> bool:
        held = self.on[tenant, s.id]
        return held == 0 or held + kv_bytes <= self.policy.tenant_max_kv_share * s.capacity
