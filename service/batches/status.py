"""Pure rules: what a request's status is, how a batch's requests count, and what
status the batch moves to next. No database here: the callers read the rows."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.models import BatchItemStatus, BatchStatus, JobStatus

# What a request may end as; an item in one of these never changes again.
ITEM_FINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
# The job error code a batch's expiry ends unfinished jobs with (status cancelled).
EXPIRED_CODE = "expired"
_WINDOW = re.compile(r"^([1-9][0-9]{0,2})h$")
MAX_WINDOW_HOURS = 168


def effective(item: BatchItemStatus, job: JobStatus | None, job_code: str | None = None) -> str:
    """An item's status: its job's while it has one (a job its batch expired counts as
    `expired`), else its own (`pending` until its job exists)."""
    if job is None:
        return "pending" if item == BatchItemStatus.queued else item.value
    if job == JobStatus.cancelled and job_code == EXPIRED_CODE:
        return "expired"
    return job.value


@dataclass(frozen=True)
class Counts:
    """A batch's requests by how they stand. OpenAI's `request_counts` are `total`,
    `completed` (succeeded) and `failed`; cancelled and expired ones are neither."""

    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    unfinished: int = 0

    @property
    def final(self) -> int:
        return self.completed + self.failed + self.cancelled + self.expired


def count(groups: Iterable[tuple[str, int]], total: int) -> Counts:
    """Counts from (effective status, how many) pairs; `total` is the batch's (items
    not made yet count as unfinished)."""
    tally = {"succeeded": 0, "failed": 0, "cancelled": 0, "expired": 0}
    seen = 0
    for status, n in groups:
        seen += n
        if status in tally:
            tally[status] += n
    final = sum(tally.values())
    total = max(total, seen)
    return Counts(
        total=total,
        completed=tally["succeeded"],
        failed=tally["failed"],
        cancelled=tally["cancelled"],
        expired=tally["expired"],
        unfinished=total - final,
    )


def next_status(
    status: BatchStatus, expanded: bool, counts: Counts, written: bool = True
) -> BatchStatus | None:
    """Where a batch goes once its requests stand at `counts`, or None (it stays).
    A batch finishes only once every request exists (`expanded`) and is final, and
    every request's line is in its output or error file (`written`): `finalizing`
    is the time between."""
    done = expanded and counts.unfinished == 0
    if status == BatchStatus.in_progress and done:
        return BatchStatus.finalizing
    if status == BatchStatus.finalizing and written:
        return BatchStatus.completed
    if status == BatchStatus.cancelling and done and written:
        return BatchStatus.cancelled
    return None


def is_expired(status: BatchStatus, expires_at: datetime | None, now: datetime) -> bool:
    """A batch still running whose window has passed."""
    running = status in (BatchStatus.validating, BatchStatus.in_progress)
    return running and expires_at is not None and now >= expires_at


def window(text: str) -> timedelta:
    """`completion_window` ("24h"; 1 to 168 hours) as a duration; ValueError otherwise."""
    found = _WINDOW.match(text)
    if found is None or int(found.group(1)) > MAX_WINDOW_HOURS:
        raise ValueError(f"completion_window is hours, 1h to {MAX_WINDOW_HOURS}h (e.g. 24h)")
    return timedelta(hours=int(found.group(1)))


_STAMPS = {
    BatchStatus.in_progress: "in_progress_at",
    BatchStatus.finalizing: "finalizing_at",
    BatchStatus.completed: "completed_at",
    BatchStatus.failed: "failed_at",
    BatchStatus.expired: "expired_at",
    BatchStatus.cancelling: "cancelling_at",
    BatchStatus.cancelled: "cancelled_at",
}


def stamp(status: BatchStatus) -> str | None:
    """The batch column that records when it entered `status`."""
    return _STAMPS.get(status)
