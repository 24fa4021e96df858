"""Which broker priority a job's task is sent with: fair order into worker slots.

Admission (`ingestion.capacity.admission`) is fair between tenants, but it only sees jobs
whose task holds a worker slot, and tasks reach slots in broker order. So the order
is made fair at the broker too: a task goes out with a priority from its tenant's
backlog (the tenant's jobs and map-reduce requests of the same class queued or
waiting, this one included), on a geometric scale, so that a tenant with a job or two
waiting is served before one with hundreds, whatever order they were sent in.

Interactive tasks and batch tasks have scales of their own, every interactive step
above every batch step: batch tasks do not take the worker slots ahead of
interactive ones (admission then yields to interactive jobs too), and between
tenants' batches the same backlog scale keeps them fair.

A batch's task also earns a step by how soon its batch expires, on the same kind of
scale (`urgency_step`), and goes at the better of the two: batches reach slots in
`expires_at` order, as admission then orders them.

Priorities follow the Redis transport's convention: lower numbers go first, and
`PRIORITY_STEPS` are the levels it keeps a list for. A job that has waited past
its class's aging bound goes out at the top level, so a big backlog, or a batch
behind interactive work, is slowed, never starved.
"""

from __future__ import annotations

import math

# One Redis list per step (the transport allows 0-9); named here so the transport
# options and the bucketing agree.
INTERACTIVE_STEPS: tuple[int, ...] = (0, 1, 2, 3, 4)
BATCH_STEPS: tuple[int, ...] = (5, 6, 7, 8, 9)
PRIORITY_STEPS: tuple[int, ...] = INTERACTIVE_STEPS + BATCH_STEPS
# Each step down the scale holds this many times the backlog of the one above:
# 1-3 waiting jobs get the top step, 4-15 the next, 16-63, 64-255, then 256 or more.
BACKLOG_BASE = 4


def job_priority(
    backlog: int,
    waited_s: float,
    aging_s: float,
    steps: tuple[int, ...] = INTERACTIVE_STEPS,
    base: int = BACKLOG_BASE,
) -> int:
    """The priority (one of `steps`, best first) of a task whose tenant has `backlog`
    jobs waiting, the job itself having waited `waited_s` of an aging bound `aging_s`;
    an aged job goes at `PRIORITY_STEPS[0]`, above every class."""
    if not steps or base < 2:
        raise ValueError(f"need at least one step and base >= 2, got {steps!r}, {base}")
    if waited_s >= aging_s:
        return min(PRIORITY_STEPS[0], steps[0])
    level, bound = 0, base
    while backlog >= bound and level < len(steps) - 1:
        level += 1
        bound *= base
    return steps[level]


def backlog_cap(steps: tuple[int, ...] = INTERACTIVE_STEPS, base: int = BACKLOG_BASE) -> int:
    """The backlog from which every larger one gets the same (last) step: counting a
    tenant's backlog past it changes nothing, so it need not be counted."""
    return int(base ** (len(steps) - 1))


# A batch due within this long goes at the top of the batch scale; each step down
# allows twice as long (1 h, 2 h, 4 h, 8 h, then later). A fresh 24 h batch earns
# nothing by it, so between those the backlog's scale alone keeps tenants fair; a
# short window, or the last hours of a long one, move a batch up.
URGENT_WITHIN_S = 3600.0
URGENCY_BASE = 2


def urgency_step(expires_in_s: float, steps: tuple[int, ...] = BATCH_STEPS) -> int:
    """The step a batch's task earns by how soon its batch expires, on a geometric
    scale like a backlog's: the batch expiring first goes first at the broker too, not
    only once its task holds a slot (admission orders by `expires_at`)."""
    level, bound = 0, URGENT_WITHIN_S
    while expires_in_s > bound and level < len(steps) - 1:
        level += 1
        bound *= URGENCY_BASE
    return steps[level]


def task_priority(
    backlog: int,
    waited_s: float,
    batch: bool,
    aging_s: float,
    batch_aging_s: float,
    expires_in_s: float = math.inf,
) -> int:
    """A job task's priority: on the batch scale for a batch's job (the better of its
    backlog's step and its batch's urgency, aged past `batch_aging_s`), else on the
    interactive one (aged past `aging_s`)."""
    if batch:
        by_backlog = job_priority(backlog, waited_s, batch_aging_s, BATCH_STEPS)
        return min(by_backlog, urgency_step(expires_in_s))
    return job_priority(backlog, waited_s, aging_s, INTERACTIVE_STEPS)
