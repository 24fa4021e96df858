"""A request file's lines (OpenAI's Batch API JSONL), read and checked without a
database: `{custom_id, method: "POST", url, body}` one to a line.

Read a line at a time from the open file, each cut at `max_line_bytes` (the rest of
an over-long line is skipped, not held), so memory is bounded by that and by the
custom_ids seen (a 16-byte digest each, at most `max_requests` of them). What fails
the whole batch (OpenAI validates so) is a `LineError` with its 1-based line; what
a body holds is left to the request's own job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

MAX_CUSTOM_ID = 1024
MAX_ERRORS = 100  # reported, then the reading stops: the batch fails either way
_SKIP = 1 << 16


@dataclass(frozen=True)
class LineError:
    code: str
    message: str
    line: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "line": self.line}


@dataclass(frozen=True)
class Request:
    line: int
    custom_id: str
    body: dict[str, Any]


def raw_lines(f: IO[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, its bytes) for every non-blank line; None for a line over
    `max_line_bytes`, whose rest is skipped."""
    number = 0
    while True:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while (rest := f.readline(_SKIP)) and not rest.endswith(b"\n"):
                pass
            yield number, None
        elif raw.strip():
            yield number, raw


def _field_error(value: dict[str, Any], endpoint: str, line: int) -> LineError | None:
    cid = value.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return LineError("missing_custom_id", "custom_id must be a non-empty string", line)
    if len(cid) > MAX_CUSTOM_ID:
        return LineError("invalid_custom_id", f"custom_id is over {MAX_CUSTOM_ID} chars", line)
    if "\x00" in cid:  # no database text column holds it
        return LineError("invalid_custom_id", "custom_id holds a NUL character", line)
    if value.get("method") != "POST":
        return LineError("invalid_method", "method must be POST", line)
    url = value.get("url")
    if url != endpoint:
        shown = json.dumps(url)[:200]
        return LineError(
            "mismatched_url", f"url {shown} differs from the batch's endpoint {endpoint}", line
        )
    if not isinstance(value.get("body"), dict):
        return LineError("invalid_body", "body must be a JSON object", line)
    return None


def parse(raw: bytes | None, endpoint: str, line: int, max_line_bytes: int) -> Request | LineError:
    """One line as a request, or what is wrong with it."""
    if raw is None:
        return LineError("line_too_long", f"the line is over {max_line_bytes:,} bytes", line)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # a nesting bomb is bad JSON too
        return LineError("invalid_json", f"not JSON: {exc}"[:300], line)
    if not isinstance(value, dict):
        return LineError("invalid_json", "a line must be a JSON object", line)
    wrong = _field_error(value, endpoint, line)
    if wrong is not None:
        return wrong
    return Request(line, value["custom_id"], value["body"])


@dataclass
class Checker:
    """Every line of one file, in order: the duplicates and the count across lines."""

    endpoint: str
    max_requests: int
    max_line_bytes: int

    def __post_init__(self) -> None:
        self.seen: dict[bytes, int] = {}
        self.errors: list[LineError] = []

    def check(self, number: int, raw: bytes | None) -> Request | None:
        found = parse(raw, self.endpoint, number, self.max_line_bytes)
        if isinstance(found, Request):
            digest = hashlib.blake2b(found.custom_id.encode(), digest_size=16).digest()
            first = self.seen.setdefault(digest, number)
            if first != number:
                shown = json.dumps(found.custom_id)[:200]
                found = LineError(
                    "duplicate_custom_id", f"custom_id {shown} is on line {first} too", number
                )
            elif len(self.seen) > self.max_requests:
                found = LineError(
                    "too_many_requests",
                    f"over {self.max_requests:,} requests (BATCH_MAX_REQUESTS)",
                    number,
                )
        if isinstance(found, LineError):
            self.errors.append(found)
            return None
        return found

    @property
    def stop(self) -> bool:
        ended = self.errors and self.errors[-1].code == "too_many_requests"
        return bool(ended) or len(self.errors) >= MAX_ERRORS


def validate(
    f: IO[bytes], endpoint: str, max_requests: int, max_line_bytes: int
) -> tuple[int, list[LineError]]:
    """(how many requests, what fails the batch) over the whole file."""
    checker = Checker(endpoint, max_requests, max_line_bytes)
    for number, raw in raw_lines(f, max_line_bytes):
        checker.check(number, raw)
        if checker.stop:
            break
    if not checker.seen and not checker.errors:
        checker.errors.append(LineError("empty_file", "the file holds no requests", None))
    return len(checker.seen), checker.errors


def requests(f: IO[bytes], endpoint: str, max_line_bytes: int) -> Iterator[Request]:
    """The requests of a file `validate` found whole, in order."""
    for number, raw in raw_lines(f, max_line_bytes):
        found = parse(raw, endpoint, number, max_line_bytes)
        if isinstance(found, Request):
            yield found
