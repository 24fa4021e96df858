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
    """OpenAI's batch statuses, for every way in (archives, request files)."""

    validating = "validating"
    in_progress = "in_progress"
    finalizing = "finalizing"
    completed = "completed"
    failed = "failed"
    expired = "expired"
    cancelling = "cancelling"
    cancelled = "cancelled"


# A batch in one of these states never changes again.
BATCH_FINAL = (
    BatchStatus.completed,
    BatchStatus.failed,
    BatchStatus.expired,
    BatchStatus.cancelled,
)


class BatchItemStatus(enum.StrEnum):
    """A request's own status while it has no job: once it has one, the job's status
    is the request's (read by join), so the job code paths know nothing of batches."""

    pending = "pending"
    queued = "queued"  # it has its job
    failed = "failed"  # never became a job (an entry error), `error_code` says why
    cancelled = "cancelled"
    expired = "expired"


class FilePurpose(enum.StrEnum):
    batch = "batch"  # a client's request file (JSONL) for a batch
    batch_output = "batch_output"  # an output or error file that Longdoc writes


class FileStatus(enum.StrEnum):
    # OpenAI's FileObject states: a file is `processed` once its bytes are stored.
    uploaded = "uploaded"
    processed = "processed"
    error = "error"


class DeliveryStatus(enum.StrEnum):
    pending = "pending"  # due at next_attempt_at
    succeeded = "succeeded"  # a 2xx came back
    failed = "failed"  # out of attempts, or refused for good (e.g. a private address)
    disabled = "disabled"  # its endpoint answered 410 Gone, or was disabled
