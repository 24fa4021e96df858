"""Which broker priority a job's task is sent with: fair order into worker slots.

Admission (`ingestion.capacity.admission`) is fair between tenants, but it only sees jobs
whose task holds a worker slot, and tasks reach slots in broker order. So the order
is made fair at the broker too: a task goes out with a priority from its tenant's
backlog (the tenant's jobs and map-reduce requests queued or waiting, this one
included), on a geometric scale, so that a tenant with a job or two waiting is
served before one with hundreds, whatever order they were sent in.

Priorities follow the Redis transport's convention: lower numbers go first, and
`PRIORITY_STEPS` are the levels it keeps a list for. A job that has waited past
the aging bound goes out at the top level, so a big backlog is slowed, never
starved.
"""

from __future__ import annotations

# One Redis list per step; kombu's default steps, named here so the transport
# options and the bucketing agree.
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
# Each step down the scale holds this many times the backlog of the one above:
# 1-3 waiting jobs get the top step, 4-15 the next, 16-63 the next, 64 or more the last.
BACKLOG_BASE = 4


def job_priority(
    backlog: int,
    waited_s: float,
    aging_s: float,
    steps: tuple[int, ...] = PRIORITY_STEPS,
    base: int = BACKLOG_BASE,
) -> int:
    """The priority (one of `steps`, best first) of a task whose tenant has `backlog`
    jobs waiting, the job itself having waited `waited_s` of an aging bound `aging_s`."""
    if not steps or base < 2:
        raise ValueError(f"need at least one step and base >= 2, got {steps!r}, {base}")
    if waited_s >= aging_s:
        return steps[0]
    level, bound = 0, base
    while backlog >= bound and level < len(steps) - 1:
        level += 1
        bound *= base
    return steps[level]
