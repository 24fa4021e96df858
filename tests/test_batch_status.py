"""The pure rules of batches: an item's effective status, the counts, the status
machine, the completion window and custom_ids. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.batches.archives import MAX_CUSTOM_ID, custom_id
from service.batches.status import Counts, count, effective, is_expired, next_status, window
from service.models import BatchItemStatus, BatchStatus, JobStatus


def test_an_item_with_a_job_has_the_jobs_status() -> None:
    assert effective(BatchItemStatus.queued, JobStatus.running) == "running"
    assert effective(BatchItemStatus.queued, JobStatus.succeeded) == "succeeded"
    assert effective(BatchItemStatus.queued, JobStatus.cancelled, "expired") == "expired"
    assert effective(BatchItemStatus.queued, JobStatus.cancelled, "cancelled") == "cancelled"
    assert effective(BatchItemStatus.failed, None) == "failed"
    assert effective(BatchItemStatus.pending, None) == "pending"


def test_counts_follow_openai_and_items_not_made_yet_are_unfinished() -> None:
    groups = [("succeeded", 1), ("failed", 1), ("cancelled", 1), ("expired", 1), ("failed", 1)]
    found = count([*groups, ("running", 1)], 10)
    assert found == Counts(total=10, completed=1, failed=2, cancelled=1, expired=1, unfinished=5)
    assert found.final == 5
    assert count([], 0) == Counts()


def test_the_status_machine() -> None:
    done = Counts(total=2, completed=1, failed=1)
    busy = Counts(total=2, completed=1, unfinished=1)
    assert next_status(BatchStatus.in_progress, True, done) == BatchStatus.finalizing
    assert next_status(BatchStatus.finalizing, True, done) == BatchStatus.completed
    assert next_status(BatchStatus.in_progress, False, done) is None  # still expanding
    assert next_status(BatchStatus.in_progress, True, busy) is None
    assert next_status(BatchStatus.cancelling, True, done) == BatchStatus.cancelled
    assert next_status(BatchStatus.cancelling, False, done) is None
    # Every request final, not every line in its file yet: finalizing, and cancelling.
    assert next_status(BatchStatus.in_progress, True, done, False) == BatchStatus.finalizing
    assert next_status(BatchStatus.finalizing, True, done, False) is None
    assert next_status(BatchStatus.cancelling, True, done, False) is None
    for final in (BatchStatus.completed, BatchStatus.failed, BatchStatus.cancelled):
        assert next_status(final, True, done) is None


def test_expiry_and_the_window() -> None:
    now = datetime(2026, 12, 2, tzinfo=UTC)
    assert is_expired(BatchStatus.in_progress, now, now)
    assert not is_expired(BatchStatus.in_progress, now + timedelta(seconds=1), now)
    assert not is_expired(BatchStatus.completed, now, now)
    assert window("24h") == timedelta(hours=24)
    for bad in ("0h", "169h", "1d", "24", ""):
        with pytest.raises(ValueError):
            window(bad)


def test_custom_ids_are_unique_in_a_batch() -> None:
    seen: set[str] = set()
    assert custom_id("a/b.pdf", 1, seen) == "a/b.pdf"
    assert custom_id("a/b.pdf", 2, seen) == "a/b.pdf#2"  # a duplicate entry's error
    long = "x" * (MAX_CUSTOM_ID + 50)
    assert custom_id(long, 3, seen) == "x" * MAX_CUSTOM_ID + "#3"
