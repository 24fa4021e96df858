"""The messages of a task's requests: the document (or the parts to combine) laid out
with the task's instructions, and the structured-output format vLLM should enforce.

`params` are as `tasks.validate` returns them. vLLM applies each model's chat template
to these OpenAI-style messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

Stage = Literal["single", "map", "reduce"]
STAGES: tuple[Stage, ...] = ("single", "map", "reduce")


def page_marker(number: int) -> str:
    """The line that starts page `number` (1-based) in a prompt."""
    if number < 1:
        raise ValueError(f"page numbers start at 1, not {number}")
    return f"[page {number}]\n"


def render_pages(pages: Iterable[tuple[int, str]]) -> str:
    """The document as sent: each page with text after its marker, a blank line between
    pages (the counted text's separator). Pages with no text get no marker."""
    return "\n\n".join(page_marker(n) + text for n, text in pages if text.strip())


def part_heading(index: int, label: str) -> str:
    return f"[part {index}: {label}]\n"


def render_parts(parts: Sequence[tuple[str, str]]) -> str:
    """The input of a reduce: each earlier answer under a heading with its label (such as
    "pages 3-9"), in order."""
    return "\n\n".join(
        part_heading(i, label) + (answer.strip() or "(empty answer)")
        for i, (label, answer) in enumerate(parts, 1)
    )


# --- Prompt text. The document goes first, so jobs of any task on the same document
# share vLLM's prefix cache; everything task-specific follows it. Kept short: every
# token here is paid again by each map and reduce request.

SYSTEM = 'Use only the given text. Each page starts with a line "[page N]"; cite pages as [p. N].'
DOC_OPEN = "<document>\n"
DOC_CLOSE = "\n</document>\n\n"
PARTS_OPEN = "<answers>\n"
PARTS_CLOSE = "\n</answers>\n\n"

_MAP_NOTE = {
    "summarize": "summarize only this part.",
    "extract": "extract only what this part holds.",
    "ask": 'answer only from this part, and "not found" where it has no answer.',
    "classify": "classify this part on its own.",
    "prompt": "follow the instruction for this part only.",
}
_ASK_SHAPE = (
    'Answer in JSON: {"answers": [{"answer": ..., "pages": [N, ...]}]}, '
    "one item per question, in order."
)
_CLASSIFY_SHAPE = (
    'Answer in JSON: {"reason": a sentence citing pages as [p. N], "label": the label '
    "exactly as written}."
)
# Reduce inputs are answers for consecutive parts, in order, each under a heading.
_PARTS = "Above are answers for consecutive parts of one document, in order."


def _summarize_text(params: Mapping[str, Any], reduce: bool) -> str:
    if reduce:
        text = (
            f"{_PARTS} Combine these summaries into one summary of the whole document: "
            "keep the order, merge repeated points, keep their [p. N] citations."
        )
    else:
        text = (
            "Summarize the document above, all of it in order, with its key facts, figures "
            "and conclusions."
        )
    focus = params.get("focus")
    return text + (f"\n\nFocus on: {focus}" if focus else "")


def _extract_text(params: Mapping[str, Any], reduce: bool) -> str:
    if reduce:
        text = (
            f"{_PARTS} Merge these JSON objects into one for the whole document, valid "
            "against the JSON Schema below: combine lists without repeats; where values "
            "differ, keep the most complete and specific."
        )
    else:
        text = (
            "Extract what the JSON Schema below describes from the document above, as one "
            "JSON object valid against it. Use only what the document states; leave out "
            "optional fields it does not give."
        )
    return f"{text}\n\nJSON Schema:\n{json.dumps(params['schema'], ensure_ascii=False)}"


def _ask_text(params: Mapping[str, Any], reduce: bool) -> str:
    if reduce:
        text = (
            f"{_PARTS} Combine them into one answer per question below: use every part "
            'that answers it, keep the [p. N] citations, and list in "pages" all the pages '
            'the answer rests on. If no part answers, answer "not found" with no pages.'
        )
    else:
        text = (
            "Answer each question below from the document above, citing pages as [p. N] "
            'and listing them in "pages". If the document does not answer, answer "not '
            'found" with no pages.'
        )
    questions = "\n".join(f"{i}. {q}" for i, q in enumerate(params["questions"], 1))
    return f"{text} {_ASK_SHAPE}\n\nQuestions:\n{questions}"


def _classify_text(params: Mapping[str, Any], reduce: bool) -> str:
    if reduce:
        text = (
            f"{_PARTS} From their labels and reasons, choose the label below that fits the "
            "whole document."
        )
    else:
        text = "Classify the document above with exactly one of the labels below."
    instruction = params.get("instruction")
    extra = f"\n\nInstruction: {instruction}" if instruction else ""
    labels = "\n".join(f"- {label}" for label in params["labels"])
    return f"{text} {_CLASSIFY_SHAPE}{extra}\n\nLabels:\n{labels}"


def _prompt_text(params: Mapping[str, Any], reduce: bool) -> str:
    if reduce:
        text = (
            f"{_PARTS} Combine them into one answer to the instruction below for the whole "
            "document: merge repeats, keep the [p. N] citations."
        )
    else:
        text = "Follow the instruction below on the document above, citing pages as [p. N]."
    return f"{text}\n\nInstruction:\n{params['instruction']}"


_TEXTS: dict[str, Callable[[Mapping[str, Any], bool], str]] = {
    "summarize": _summarize_text,
    "extract": _extract_text,
    "ask": _ask_text,
    "classify": _classify_text,
    "prompt": _prompt_text,
}


def _check(task: str, stage: str) -> str:
    # Tasks reach here validated; anything else is a bug in the caller, not bad input.
    if task not in _TEXTS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(_TEXTS)}")
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return task


def prompt_parts(task: str, params: Mapping[str, Any], stage: Stage) -> tuple[str, str, str]:
    """(system message, user text before the input, user text after it); the input is
    `render_pages` for single and map, `render_parts` for reduce."""
    body = _TEXTS[_check(task, stage)]
    if stage == "reduce":
        return SYSTEM, PARTS_OPEN, PARTS_CLOSE + body(params, True)
    if stage == "map":
        note = f"This is one part of a longer document: {_MAP_NOTE[task]}\n\n"
        return SYSTEM, DOC_OPEN, DOC_CLOSE + note + body(params, False)
    return SYSTEM, DOC_OPEN, DOC_CLOSE + body(params, False)


def build_messages(
    task: str, params: Mapping[str, Any], stage: Stage, text: str
) -> list[dict[str, str]]:
    """The chat messages of one request; `text` is `render_pages(...)` for single and map,
    `render_parts(...)` for reduce."""
    system, before, after = prompt_parts(task, params, stage)
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": before + text + after},
    ]


# Bounds a looping model cannot run past: an answer cites a few pages, not a count.
ASK_MAX_PAGES = 10
ASK_ANSWER_CHARS = 2_000


def ask_schema(
    questions: Sequence[str], pages_seen: tuple[int, int] | None = None
) -> dict[str, Any]:
    # The bounds also stop a looping model from writing one endless number.
    first, last = pages_seen or (1, None)
    pages: dict[str, Any] = {"type": "integer", "minimum": first}
    if last is not None:
        pages["maximum"] = last
    # No echo of the question: answers are matched by position, and every token the
    # model spends copying a question is one less for the answer.
    item = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": ASK_ANSWER_CHARS},
            "pages": {"type": "array", "items": pages, "maxItems": ASK_MAX_PAGES},
        },
        "required": ["answer", "pages"],
        "additionalProperties": False,
    }
    n = len(questions)
    answers = {"type": "array", "items": item, "minItems": n, "maxItems": n}
    return {
        "type": "object",
        "properties": {"answers": answers},
        "required": ["answers"],
        "additionalProperties": False,
    }


CLASSIFY_REASON_CHARS = 160


def classify_schema(labels: Sequence[str]) -> dict[str, Any]:
    # The reason comes first so the model writes it before it commits to a label; it is
    # bounded so that a rambling model still reaches the label within a small budget.
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": CLASSIFY_REASON_CHARS},
            "label": {"type": "string", "enum": list(labels)},
        },
        "required": ["reason", "label"],
        "additionalProperties": False,
    }


def response_format(
    task: str,
    params: Mapping[str, Any],
    stage: Stage,
    pages: tuple[int, int] | None = None,
) -> dict[str, Any] | None:
    """The request's `response_format`, or None for free text. vLLM ignores a top-level
    "guided_json", so structured output goes only through here. `pages`: the range the
    request shows the model, which bounds the pages an `ask` answer may cite."""
    if _check(task, stage) == "extract":
        schema: dict[str, Any] = json.loads(json.dumps(params["schema"]))
    elif task == "ask":
        schema = ask_schema(params["questions"], pages)
    elif task == "classify":
        schema = classify_schema(params["labels"])
    else:
        return None
    return {"type": "json_schema", "json_schema": {"name": task, "schema": schema, "strict": True}}
