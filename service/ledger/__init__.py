"""The KV ledger: leases that reserve a job's KV-cache bytes on one vLLM replica.

A job runs only while it holds a lease. Every function takes `now` from the caller
(workers pass `utcnow()`, tests and the simulator their own clock) and owns its
transaction; `release(commit=False)` leaves the commit to the caller so the job's
Result can land in the same transaction.

Invariants, on Postgres and SQLite alike:
- a lease exists iff its job is `running`: both change in one transaction;
- the bytes of all lease rows on a backend never exceed its capacity.

Why the second holds under concurrency: only `try_admit` inserts leases, and only
while holding the write lock on its role's backends: `SELECT … FOR NO KEY UPDATE`
ordered by id on Postgres (admitters queue instead of deadlocking, and foreign key
checks from other tables are not blocked), `BEGIN IMMEDIATE` on SQLite (the
database-wide write lock). Under that lock it first deletes the expired leases it
is about to ignore, and only then counts the rest. So an expired lease is never
counted as free while its row exists, and a late heartbeat cannot revive it once
it has been: the row is gone.

Lock order, for every transaction that touches these tables on Postgres (renew,
release, try_admit and its reaping, expire, a run's end and fan-in in
`workers/jobs/run.py`, cancel and `service.jobs.tree.end_tree`, planning, the
sweeper), so that none can deadlock another:
1. backends, by id (admission, `expire`, and the refresher, `service/backends/discovery.py`);
2. jobs (`FOR NO KEY UPDATE`, `service.jobs.tree.lock`): a map-reduce job before its
   requests; jobs of one level by id;
3. leases, only ever touched while their job is locked.
Admission breaks no rule by taking a job lock out of order, because it never waits
for one: a job about to be placed that is locked elsewhere (being cancelled,
claimed) is skipped this round (`SKIP LOCKED`). A transaction that Postgres aborts
anyway (a deadlock victim, a serialization failure) is run again
(`service.db.retry_conflicts`); on SQLite `BEGIN IMMEDIATE` serializes writers.

Workers should hand `renew` and `release` the `lease_id` they were admitted with:
it fences a worker whose lease expired, and whose job was admitted again under a
new lease, off its successor's lease.
"""

from service.ledger.admit import AdmitResult, Admitted, LedgerError, try_admit
from service.ledger.leases import Capacity, capacity, capacity_of, release, renew
from service.ledger.reaping import expire

__all__ = [
    "AdmitResult",
    "Admitted",
    "Capacity",
    "LedgerError",
    "capacity",
    "capacity_of",
    "expire",
    "release",
    "renew",
    "try_admit",
]
