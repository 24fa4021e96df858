"""Typed values shared by the parsers, the tokenizers and their callers."""

from __future__ import annotations

from dataclasses import dataclass, field


class IngestError(Exception):
    """A document that cannot be processed, with a stable machine-readable code.

    `code` is one of: ``unsupported_type``, ``encrypted``, ``corrupt``, ``empty``,
    ``too_many_pages``, ``too_large``, ``too_deeply_nested``. `reason` is a sentence for people.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """What a parser knows before reading any page."""

    media_type: str
    page_count: int
    title: str | None = None
    author: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True)
class PageText:
    """One page's extracted text. `number` is 1-based."""

    number: int
    text: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A token count for one model role.

    `method` is ``tokenizer`` (local file), ``server`` (a vLLM ``/tokenize``) or
    ``estimate``; only the first two are exact. `model` is the model whose tokenizer
    made the count (a role may be served by a stand-in whose vocabulary is not the
    role's production model's); None for an estimate or an unlabelled file.
    """

    count: int
    exact: bool
    tokenizer: str
    method: str
    model: str | None = None


# Exceptions that the broad per-page `except Exception` clauses (a page that fails must
# not end its document) must let through: a task's time limit, which Celery raises as an
# ordinary exception wherever the task happens to be, so that the task ends as its limit
# says instead of going on with the page marked failed. ingestion/ imports no Celery:
# the worker registers the class (workers/task_options.py).
_PASSING: list[type[BaseException]] = []


def let_through(kind: type[BaseException]) -> None:
    """Have `passes_through` say yes to `kind` (and its subclasses)."""
    if kind not in _PASSING:
        _PASSING.append(kind)


def passes_through(exc: BaseException) -> bool:
    """Whether a page-level handler must re-raise `exc` rather than record it."""
    return isinstance(exc, tuple(_PASSING))
