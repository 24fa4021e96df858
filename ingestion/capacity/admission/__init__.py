"""Which waiting jobs start now, and on which replica: the admission policy, pure.

The KV ledger (service/ledger/) feeds it a snapshot read under its locks, and
the scheduling simulator feeds it a fake clock; both get the same answer from the
same code. Time is plain seconds on the caller's clock; ids are strings.

Inputs: the replicas of one role (KV capacity in bytes, the leases held there
with their bytes, expected end and tenant, whether the replica takes new work),
the role's waiting jobs (tenant, arrival `seq`, KV bytes, estimated duration,
waiting since, preferred replica, whether a batch made it and when that batch
expires, an affinity key: its document, or a chat job's prefix key), `now` and the
`Policy` (aging bounds, tenant limits).

The order (`order.py`): interactive jobs before batch jobs, of every tenant; FIFO
within a tenant's interactive jobs (`seq`, then id), its batch jobs by their batch's
expiry, then `seq`. Between tenants, the head of the least served one goes next
(fewest KV bytes held on the role, counting what this decision has placed; then
fewest leases; then the earlier expiry and head), so a tenant with one job is not
queued behind another's 500, interactive or batch. A job that has waited longer
than its class's bound (`Policy.max_head_wait_s` interactive,
`Policy.batch_max_wait_s` batch) is aged: aged jobs go before every unaged one, in
arrival order. With one tenant and no batch this is plain arrival order. Taking
jobs in that order:

1. A job larger than every replica's total capacity can never run: it is listed
   in `Decision.oversize` and otherwise ignored (the caller fails it).
2. Tenant limits. A tenant holding `tenant_max_running` leases on the role, or
   for whose next job no accepting replica is within its KV share, is held back
   for this decision: none of its jobs starts or becomes the head (FIFO within a
   tenant: its later, smaller jobs do not overtake the one held back), and it is
   listed in `Decision.limited`. The KV share: while another tenant (not at its
   running limit) has jobs waiting, a tenant may hold at most
   `tenant_max_kv_share` of a replica's capacity, except that a tenant holding
   nothing there may always start one job (else a job larger than the share
   would never run while anyone else waits). With nobody else waiting the whole
   pool is its own: the share is work-conserving, and it takes back nothing
   already leased; the head's reservation (3) is what protects a newcomer.
3. Until one job has to wait, each job starts on a replica where it fits now:
   its preferred replica (its prefix cache holds the document or the chat
   prefix) if it fits there; without one, the replica this decision just placed
   a job of the same affinity on, if it fits there (the second finds in that
   replica's prefix cache what the first computes); else the replica with the
   most free bytes (ties: lowest id).
4. The first job that fits nowhere is the head. Its reservation is the earliest
   time T at which some accepting replica within its tenant's share frees enough
   bytes for it, found by releasing that replica's leases at their expected
   ends (an end already passed counts as now; an unknown end is infinite). The
   reservation is on the replica with the smallest T (ties: preferred, then
   most bytes spare at T, then lowest id); `spare` is what that replica still
   has free at T once the head starts there.
5. Aging: if the head is aged (it waited longer than its class's bound), nothing
   passes it and the decision stops there. Estimates can be wrong; this bound is
   what guarantees that a 5M-token job is never starved by small ones, whichever
   tenants they belong to (it does not lift its own tenant's limits).
6. Otherwise each later job may start (EASY backfilling) on a replica where it
   fits now if it cannot delay the head's reservation, that is if one of:
   (a) the replica is not the one the head's reservation is on;
   (b) by its estimate it ends no later than T (its bytes are back by then);
   (c) its bytes fit in `spare`, which it then consumes.
   If the head has no finite reservation (no accepting replica can ever hold
   it, or only once a lease of unknown length ends) there is nothing to delay
   and jobs that fit may start; the aging bound still applies.
   Among the replicas a job may use, the preferred one wins, else the most free.

Only the head holds a reservation (EASY, not conservative backfilling): a job
behind it gets its own once it is the head, and by then it has usually waited
long enough for the aging bound to hold everything else back.
"""

from ingestion.capacity.admission.backfill import apply, decide, reserve
from ingestion.capacity.admission.values import (
    Decision,
    Lease,
    Placement,
    Policy,
    Replica,
    Reservation,
    Rule,
    WaitingJob,
)

__all__ = [
    "Decision",
    "Lease",
    "Placement",
    "Policy",
    "Replica",
    "Reservation",
    "Rule",
    "WaitingJob",
    "apply",
    "decide",
    "reserve",
]
