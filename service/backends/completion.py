"""What one chat call to a vLLM server ends in: a `Completion`, or `VllmError` (it
failed for good, and whether trying later may help) or `Cancelled` (the caller's
cancel event aborted it). Shared by the client, its stream reader and the workers
that map them to job outcomes."""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.tasks.repetition import Loop


class VllmError(Exception):
    """A request that failed for good. `retryable` says whether trying later (e.g. after
    the server comes back) may succeed: connection errors/5xx/429 after retries are
    retryable, other 4xx (prompt too long, bad schema...) are not. `status` is the HTTP
    status or None. `server_down`: the server itself could not be reached (refused, no
    connection in time, the connection reset before any response), as opposed to one
    request failing on a server that answers (a 5xx, a 429, a stream cut or aborted)."""

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None,
        attempts: int = 1, request_id: str | None = None, server_down: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.server_down = server_down
        self.status = status
        self.attempts = attempts  # how many were made
        self.request_id = request_id  # the last attempt's id


class Cancelled(Exception):
    """The caller's cancel event was set; the request was aborted."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id} cancelled")
        self.request_id = request_id


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    request_id: str  # the id of the attempt that succeeded
    model: str
    attempts: int
    elapsed_s: float  # the whole call, backoff and failed attempts included
    first_token_s: float | None  # from the start of the attempt that succeeded (~prefill)
    # The output began to loop and the request was stopped there: `text` is cut after the
    # first copy of the repeated block, `finish_reason` is "repetition".
    loop: Loop | None = None
