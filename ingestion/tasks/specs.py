"""The tasks a job can run on a document: their names and parameters, and the size of
the fixed text their prompts add around the document.

`validate` is the gate for a client's parameters; everything downstream
(`task_prompts`, `task_output`) takes parameters as `validate` returns them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ingestion.tasks.prompts import prompt_parts
from ingestion.tasks.schema import check_schema, json_type, short

TASK_NAMES: tuple[str, ...] = ("summarize", "extract", "ask", "classify", "prompt")
# Chat-template special tokens around the two messages (Gemma's <start_of_turn>... and
# Llama 4's <|header_start|>...: about 10 each), with room to spare.
TEMPLATE_TOKENS: int = 64
# A chat request (`service/jobs/chat.py`) is not a task on a document: its messages are
# the prompt. Each message adds its turn's header and end (Gemma's `<start_of_turn>user`
# ... `<end_of_turn>`, Llama 4's `<|header_start|>user<|header_end|>` ... `<|eot|>`:
# about 5 tokens), with room to spare, on top of TEMPLATE_TOKENS for the whole.
CHAT_TASK = "chat"
CHAT_MESSAGE_TOKENS: int = 8

FOCUS_CHARS = 2_000
QUESTION_CHARS = 2_000
MAX_QUESTIONS = 50
LABEL_CHARS = 200
MAX_LABELS = 200
PROMPT_CHARS = 20_000


class TaskError(ValueError):
    """Bad task parameters, with the field to blame and what to change."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def bad_char(text: str, *, one_line: bool) -> str | None:
    # NUL and lone surrogates break the database and the JSON sent to vLLM; a label
    # must stay one line so the prompt's label list stays unambiguous.
    for ch in text:
        code = ord(ch)
        if code == 0:
            return "must not contain NUL characters"
        if 0xD800 <= code <= 0xDFFF:
            return "must not contain lone surrogates (invalid Unicode)"
        if one_line and (code < 0x20 or code == 0x7F or ch in "\u2028\u2029\x85"):
            return "must be one line, without line breaks or control characters"
    return None


def _text(field: str, value: object, limit: int, *, one_line: bool = False) -> str:
    if not isinstance(value, str):
        raise TaskError(field, f"must be a string, not {json_type(value)}")
    text = value.strip()
    if not text:
        raise TaskError(field, "must not be empty")
    if len(text) > limit:
        raise TaskError(field, f"is {len(text):,} characters long; the limit is {limit:,}")
    bad = bad_char(text, one_line=one_line)
    if bad is not None:
        raise TaskError(field, bad)
    return text


def _optional(params: Mapping[str, Any], key: str, limit: int) -> dict[str, str]:
    value = params.get(key)
    # Null or blank asks for nothing in particular, like leaving the key out.
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    return {key: _text(key, value, limit)}


def _texts(
    field: str, value: object, most: int, limit: int, *, one_line: bool = False
) -> list[str]:
    if not isinstance(value, list | tuple) or not value:
        raise TaskError(field, "must be a non-empty list of strings")
    if len(value) > most:
        raise TaskError(field, f"has {len(value):,} items; the limit is {most}")
    return [_text(f"{field}[{i}]", v, limit, one_line=one_line) for i, v in enumerate(value)]


def _summarize(params: Mapping[str, Any]) -> dict[str, Any]:
    return _optional(params, "focus", FOCUS_CHARS)


def _extract(params: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return {"schema": check_schema(params["schema"])}
    except ValueError as exc:
        raise TaskError("schema", str(exc)) from None


def _ask(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"questions": _texts("questions", params["questions"], MAX_QUESTIONS, QUESTION_CHARS)}


def _classify(params: Mapping[str, Any]) -> dict[str, Any]:
    labels = _texts("labels", params["labels"], MAX_LABELS, LABEL_CHARS, one_line=True)
    # Unique ignoring case, so a model's "SPAM" maps back to exactly one label.
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        j = seen.setdefault(label.casefold(), i)
        if j != i:
            raise TaskError(
                f"labels[{i}]", f"repeats labels[{j}] ({short(labels[j])!r}); labels must differ"
            )
    return {"labels": labels, **_optional(params, "instruction", FOCUS_CHARS)}


def _prompt(params: Mapping[str, Any]) -> dict[str, Any]:
    return {"instruction": _text("instruction", params["instruction"], PROMPT_CHARS)}


# task -> (required keys, optional keys, checker)
_SPECS: dict[str, tuple[tuple[str, ...], tuple[str, ...], Callable[..., dict[str, Any]]]] = {
    "summarize": ((), ("focus",), _summarize),
    "extract": (("schema",), (), _extract),
    "ask": (("questions",), (), _ask),
    "classify": (("labels",), ("instruction",), _classify),
    "prompt": (("instruction",), (), _prompt),
}


def check_task(task: object) -> str:
    if not isinstance(task, str) or task not in _SPECS:
        shown = repr(short(task)) if isinstance(task, str) else json_type(task)
        raise TaskError("task", f"unknown task {shown}; known tasks: {', '.join(TASK_NAMES)}")
    return task


def validate(task: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """`params` for `task`, checked and normalized (stripped text, a detached JSON-ready
    copy of any schema). Raises TaskError with the field and the reason."""
    task = check_task(task)
    required, optional, check = _SPECS[task]
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise TaskError("params", f"must be an object, not {json_type(params)}")
    allowed = (*required, *optional)
    for key in params:
        if key not in allowed:
            takes = ", ".join(allowed) if allowed else "no parameters"
            name = short(key if isinstance(key, str) and key.strip() else repr(key))
            raise TaskError(name, f"unknown parameter for task {task}; it takes: {takes}")
    for key in required:
        if key not in params:
            raise TaskError(key, f"is required for task {task}")
    return check(params)


def instruction_text(task: str, params: Mapping[str, Any]) -> str:
    """All the fixed text of a single or map request: what `build_messages` adds around
    the document for stage "map". A single request's is the same less one sentence on
    parts, so this bounds both."""
    return "".join(prompt_parts(check_task(task), params, "map"))


def reduce_instruction_text(task: str, params: Mapping[str, Any]) -> str:
    """All the fixed text of a reduce request, the parts' headings excepted."""
    return "".join(prompt_parts(check_task(task), params, "reduce"))


# A dry run (`longdoc route`) has no client parameters: budget plausible ones.
DRY_RUN_PARAMS: dict[str, dict[str, Any]] = {
    "summarize": {},
    "extract": {
        "schema": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "authors": {"type": "array", "items": {"type": "string"}},
                "date": {"type": "string"},
                "key_findings": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["title"],
        }
    },
    "ask": {
        "questions": [
            "What is the main conclusion of the document?",
            "Which figures or dates does it give for its key results?",
            "What limitations or open questions does it state?",
        ]
    },
    "classify": {"labels": ["report", "manual", "contract", "article", "book", "other"]},
    "prompt": {
        "instruction": "List the main topics of the document, with the pages where each "
        "is discussed."
    },
}
