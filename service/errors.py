"""What the core refuses, as exceptions that know nothing of HTTP.

Each carries a stable `code` a client can branch on, a `reason` for people, and, for
bad input, the `field` to blame. Extra keys (`job_ids`, `supported`, ...) travel in
`extra` and are shown beside them. Only the API (`service.api.problems`) turns a
class into a status code, so the core and the workers never need a web framework.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal a client can act on: never a bug, never logged as one."""

    def __init__(
        self, code: str, reason: str, /, *, field: str | None = None, **extra: Any
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.field = field
        self.extra = extra


class BadRequest(DomainError):
    """Input that could not even be read (a malformed or truncated body)."""


class Unauthenticated(DomainError):
    """No credentials, or credentials that name no live key."""


class NotFound(DomainError):
    """No such thing for this tenant; also another tenant's, so ids leak nothing."""


class Conflict(DomainError):
    """The thing exists, but its state does not allow this (yet)."""


class TooLarge(DomainError):
    """Over a size limit; nothing was stored."""


class Unsupported(DomainError):
    """A kind of input the service does not handle (a media type)."""


class Invalid(DomainError):
    """Well-formed input whose values are refused: bad params, budget, range."""


class Throttled(DomainError):
    """Over a limit that lifts with time: retry after `retry_after_s`."""

    def __init__(self, code: str, reason: str, /, *, retry_after_s: int, **extra: Any) -> None:
        super().__init__(code, reason, **extra)
        self.retry_after_s = retry_after_s


class QuotaExceeded(Throttled):
    """One of this tenant's own limits."""


class Unavailable(Throttled):
    """The service as a whole is overloaded or missing a dependency."""
