"""One logging setup for the API and the workers: JSON lines, or text on a terminal.

A JSON line is one object: `ts` (RFC 3339, UTC), `level`, `logger`, `message`, the ids
of what the line is about, and `exc` (the whole traceback, one string) when there is
one. The ids come from a context variable: the API's middleware binds the request's
`request_id` (service/api/request_ids.py), the worker binds a task's `task_id` and its
`document_id`, `job_id`, `batch_id` or `delivery_id` while it runs (workers/app.py),
and code that learns more of them binds those too (a job's document). Only the names in
`ID_FIELDS` can be bound: no tenant id, key or secret reaches a line that way.

The standard library's Formatter rather than python-json-logger or structlog: the
JSON needs the record's fields, the bound ids and the traceback, a few lines here,
and either library would still need the context variable and uvicorn's access-line
rewrite below; one dependency fewer in every worker.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from service.config import Settings

ID_FIELDS = frozenset({"request_id", "task_id", "document_id", "job_id", "batch_id", "delivery_id"})
_ids: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "longdoc_log_ids", default=MappingProxyType({})
)
# Loggers that bring handlers of their own (uvicorn's dictConfig, Celery's): theirs go,
# and their lines reach the root's one handler like every other.
_FOREIGN = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "celery", "celery.task")


def current_ids() -> dict[str, str]:
    return dict(_ids.get())


def bind(**ids: object) -> contextvars.Token[Mapping[str, str]]:
    """Add `ids` (None values skipped) to every line logged from here in this context:
    this task, request or thread, and the threads it starts through service.periodic.
    `unbind(token)` undoes it; a task's ids are undone when the task ends."""
    unknown = set(ids) - ID_FIELDS
    if unknown:
        raise ValueError(f"not a log id: {sorted(unknown)} (only {sorted(ID_FIELDS)})")
    given = {k: str(v) for k, v in ids.items() if v is not None}
    return _ids.set(MappingProxyType({**_ids.get(), **given}))


def unbind(token: contextvars.Token[Mapping[str, str]]) -> None:
    _ids.reset(token)


@contextmanager
def bound(**ids: object) -> Iterator[None]:
    token = bind(**ids)
    try:
        yield
    finally:
        unbind(token)


class _Stamp(logging.Filter):
    """On the handler, so in the thread (and context) that logged: the ids, and
    uvicorn's access line as fields of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.log_ids = dict(_ids.get())
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, target, _version, status = args
            # Without the query: the upload route carries the task's params there (a
            # client's questions, an extraction schema), which are theirs, not ours.
            path = str(target).partition("?")[0]
            record.msg, record.args = "%s %s %s", (method, path, status)
            record.http = {"method": method, "path": path, "status": status, "client": client}
        return True


def _rfc3339(created: float) -> str:
    when = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "log_ids", {}),
            **getattr(record, "http", {}),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # ASCII only: no raw line separator (U+2028 and kin split lines in some readers,
        # Python's splitlines among them) can end up inside one line.
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s%(id_text)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _rfc3339(record.created)  # the JSON lines' clock: UTC, whatever the host's

    def format(self, record: logging.LogRecord) -> str:
        ids: dict[str, str] = getattr(record, "log_ids", {})
        record.id_text = "".join(f" {k}={v}" for k, v in ids.items())
        return super().format(record)


def wants_json(log_format: str, stream: IO[str]) -> bool:
    if log_format != "auto":
        return log_format == "json"
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


def setup_logging(
    settings: Settings, stream: IO[str] | None = None, level: int | str = logging.INFO
) -> None:
    """Every line of this process to `stream` (stderr), through one handler on the root
    logger. Run again (a pool child, a test), it replaces the handler: no line twice."""
    out = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(out)
    handler.addFilter(_Stamp())
    json_lines = wants_json(settings.log_format, out)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in _FOREIGN:
        foreign = logging.getLogger(name)
        foreign.handlers = []
        foreign.propagate = True
    logging.captureWarnings(True)
