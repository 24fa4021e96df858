"""The states a document, a job, a batch and a file move through; what a file is for."""

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


class FilePurpose(enum.StrEnum):
    batch = "batch"  # a client's request file (JSONL) for a batch
    batch_output = "batch_output"  # an output or error file that Longdoc writes


class FileStatus(enum.StrEnum):
    # OpenAI's FileObject states: a file is `processed` once its bytes are stored.
    uploaded = "uploaded"
    processed = "processed"
    error = "error"
