"""What admission is given (replicas with their leases, waiting jobs, the policy) and
what it answers (placements, the head's reservation)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Rule(StrEnum):
    """Why a job was allowed to start."""

    in_order = "in_order"
    other_replica = "other_replica"
    ends_before_reservation = "ends_before_reservation"
    fits_beside_head = "fits_beside_head"
    no_reservation = "no_reservation"


@dataclass(frozen=True)
class Lease:
    kv_bytes: int
    expected_end: float = math.inf
    # None: held by nobody the tenant limits know of (it still takes its bytes).
    tenant: str | None = None


@dataclass(frozen=True)
class Replica:
    id: str
    capacity_bytes: int
    leases: tuple[Lease, ...] = ()
    # False for a replica known to be down: it counts for "could this job ever
    # run" but receives no new work and holds no reservation.
    accepting: bool = True

    @property
    def free_bytes(self) -> int:
        return self.capacity_bytes - sum(lease.kv_bytes for lease in self.leases)


@dataclass(frozen=True)
class WaitingJob:
    id: str
    seq: int
    kv_bytes: int
    waiting_since: float
    est_duration_s: float = math.inf
    preferred_replica: str | None = None
    tenant: str = ""
    # A batch's job (not an interactive one), and when its batch expires (inf: never).
    batch: bool = False
    expires_at: float = math.inf
    # What a replica's prefix cache would share between jobs (their document): a job
    # with none preferred follows one of the same key placed earlier in the decision.
    affinity: str | None = None

    def __post_init__(self) -> None:
        if self.kv_bytes < 0:
            raise ValueError(f"job {self.id}: negative kv_bytes {self.kv_bytes}")
        if not self.est_duration_s >= 0:  # also rejects NaN
            raise ValueError(f"job {self.id}: bad duration estimate {self.est_duration_s}")


@dataclass(frozen=True)
class Policy:
    # How long an interactive job waits before it is aged (see `order`).
    max_head_wait_s: float = 900.0
    # Leases one tenant may hold at once on the role (None: no limit).
    tenant_max_running: int | None = None
    # The share of a replica's KV capacity one tenant may hold while another waits.
    tenant_max_kv_share: float = 1.0
    # How long a batch job waits behind interactive work before it is aged.
    batch_max_wait_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.tenant_max_running is not None and self.tenant_max_running < 1:
            raise ValueError(f"tenant_max_running must be >= 1, got {self.tenant_max_running}")
        if not 0.0 < self.tenant_max_kv_share <= 1.0:
            raise ValueError(
                f"tenant_max_kv_share must be in (0, 1], got {self.tenant_max_kv_share}"
            )


@dataclass(frozen=True)
class Placement:
    job_id: str
    replica_id: str
    rule: Rule


@dataclass(frozen=True)
class Reservation:
    job_id: str
    replica_id: str
    at: float
    spare_bytes: int


@dataclass(frozen=True)
class Decision:
    placements: tuple[Placement, ...]
    oversize: tuple[str, ...]
    head: str | None = None
    reservation: Reservation | None = None
    aged: bool = False
    limited: tuple[str, ...] = ()  # tenants held back by their limits (rule 2)
