"""A job and its requests while they are simulated: how far each request has got
(computed and generated tokens, the KV blocks it holds), what it waits on, and the
times and preemptions the metrics are taken from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.sim.workload import JobSpec, RequestSpec

if TYPE_CHECKING:  # a request names its server; the server module imports this one
    from bench.sim.server import Server

__all__ = ["JobRun", "Req"]


class Req:
    """One model request while it is simulated."""

    __slots__ = (
        "alloc",
        "computed",
        "dependents",
        "finished_at",
        "generated",
        "id",
        "job",
        "pending",
        "preemptions",
        "ready_at",
        "recomputed",
        "running",
        "seq",
        "server",
        "spec",
        "started_at",
        "wait",
        "waiting_since",
    )

    def __init__(self, job: JobRun, spec: RequestSpec, seq: int) -> None:
        self.job = job
        self.spec = spec
        self.id = f"{job.spec.id}.{spec.index}"
        self.seq = seq
        self.generated = 0
        self.computed = 0
        self.alloc = 0
        self.pending = len(spec.deps)
        self.dependents: list[Req] = []
        self.ready_at: float | None = None
        self.waiting_since: float | None = None
        self.wait = 0.0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.preemptions = 0
        self.recomputed = 0
        self.running = False
        self.server: Server | None = None

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def kv_bytes(self) -> int:
        return self.spec.kv_bytes

    @property
    def priority(self) -> tuple[int, int]:
        """vLLM priority mode: smaller runs first and is preempted last."""
        return (self.spec.planned_tokens, self.seq)

    def decoding(self) -> bool:
        return self.computed >= self.spec.prompt + self.generated


@dataclass(eq=False)
class JobRun:
    spec: JobSpec
    requests: list[Req] = field(default_factory=list)
    finished_at: float | None = None
    remaining: int = 0
