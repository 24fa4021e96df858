"""The order admission takes waiting jobs in: aged first, then interactive, then batch.

Two classes of work share the replicas. An interactive job (made by one API call)
has somebody waiting on it; a batch job (made by a batch, `WaitingJob.batch`) has a
completion window of hours. So the batch class yields: while any tenant's
interactive job is waiting, it is taken before every batch job, of its own tenant or
another's. Among batch jobs the fair order between tenants is the interactive one
(least served first), and ties, as well as the order within one tenant, go to the
batch that expires first (`WaitingJob.expires_at`), then arrival.

Yielding must not become starving: a job that has waited past its class's bound
(`Policy.max_head_wait_s` for interactive work, `Policy.batch_max_wait_s` for batch
work) is aged. Aged jobs go before every unaged one, in arrival order whatever their
class, and nothing passes an aged head that does not fit (rule 5 of the package
docstring). So a batch job waits at most about `batch_max_wait_s` behind
interactive work, and then the interactive jobs wait behind it. Within one tenant
an aged batch job joins its interactive jobs in arrival order (FIFO, as between
interactive jobs, whatever their age).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ingestion.capacity.admission.values import Policy, WaitingJob

# Within a tenant: (class, expiry, seq, id), class 0 interactive or aged, 1 batch.
QueueKey = tuple[int, float, int, str]


def bound(job: WaitingJob, policy: Policy) -> float:
    """How long `job` may wait before it is aged."""
    return policy.batch_max_wait_s if job.batch else policy.max_head_wait_s


def aged(job: WaitingJob, now: float, policy: Policy) -> bool:
    return now - job.waiting_since > bound(job, policy)


def queue_key(job: WaitingJob, now: float, policy: Policy) -> QueueKey:
    """A job's place in its tenant's queue: interactive jobs, and batch jobs once
    aged, in arrival order; then the other batch jobs, the batch expiring first ahead."""
    if not job.batch or aged(job, now, policy):
        return (0, 0.0, job.seq, job.id)
    return (1, job.expires_at, job.seq, job.id)


def pick(
    heads: Sequence[WaitingJob],
    now: float,
    policy: Policy,
    served: Callable[[str], tuple[int, int]],
) -> WaitingJob:
    """Which tenant's head goes next: the earliest aged head; else an interactive head,
    else a batch head, of the least served tenant (`served`: the bytes and leases it
    holds on the role), ties to the earlier expiry, then arrival."""
    old = [h for h in heads if aged(h, now, policy)]
    if old:
        return min(old, key=lambda h: (h.seq, h.id))
    interactive = [h for h in heads if not h.batch]
    pool = interactive or list(heads)
    return min(pool, key=lambda h: (*served(h.tenant), h.expires_at, h.seq, h.id))
