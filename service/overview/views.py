"""What the status page shows, typed: one dataclass per table row, and the whole."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class BackendView:
    id: uuid.UUID  # as the metrics name it: not the URL
    role: str
    model: str | None
    state: str  # "up", "down", "up, not usable", "up, mismatched"
    usable: bool
    context_tokens: int | None
    capacity_bytes: int | None
    leased_bytes: int  # every tenant's for an operator; the viewer's own for a tenant
    leases: int
    url: str | None = None  # operators only
    error: str | None = None  # operators only
    mismatches: dict[str, Any] = field(default_factory=dict)

    @property
    def free_bytes(self) -> int | None:
        return None if self.capacity_bytes is None else self.capacity_bytes - self.leased_bytes

    @property
    def leased_share(self) -> float:
        """Of the pool, 0..1 (over-leased after an override lowered the pool: 1)."""
        if not self.capacity_bytes:
            return 0.0
        return min(max(self.leased_bytes / self.capacity_bytes, 0.0), 1.0)


@dataclass(frozen=True)
class QueueView:
    """Requests of one model role: not routed yet ("routing"), or routed to it."""

    role: str
    queued: int = 0
    waiting_for_capacity: int = 0
    running: int = 0
    oldest_wait_s: float | None = None


@dataclass(frozen=True)
class JobView:
    id: uuid.UUID
    task: str
    status: str
    filename: str | None
    role: str | None
    created_at: datetime
    done: int  # requests (or pages, while its document is parsed) finished
    total: int | None
    stage: str  # what `done` counts
    reason: str | None = None

    @property
    def share(self) -> float | None:
        return None if not self.total else min(self.done / self.total, 1.0)


@dataclass(frozen=True)
class BatchView:
    id: uuid.UUID
    kind: str
    status: str
    filename: str | None
    created_at: datetime
    total: int
    completed: int
    failed: int

    @property
    def share(self) -> float | None:
        return None if not self.total else min((self.completed + self.failed) / self.total, 1.0)


@dataclass(frozen=True)
class FailureView:
    kind: str  # "job" or "document"
    id: uuid.UUID
    at: datetime
    code: str
    reason: str
    filename: str | None = None


@dataclass(frozen=True)
class Overview:
    admin: bool
    now: datetime
    backends: list[BackendView]
    retired_backends: int
    queues: list[QueueView]
    jobs: list[JobView]
    batches: list[BatchView]
    failures: list[FailureView]
