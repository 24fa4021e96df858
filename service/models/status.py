"""The states a document, a job and a batch move through."""

from __future__ import annotations

import enum


class DocumentStatus(enum.StrEnum):
    queued = "queued"
    parsing = "parsing"
    parsed = "parsed"
    failed = "failed"


class JobStatus(enum.StrEnum):
    queued = "queued"
    waiting_for_capacity = "waiting_for_capacity"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


# A job in one of these states never changes again.
FINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class BatchStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"
