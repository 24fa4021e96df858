"""What a model answered, checked: parsed, validated against the task's shape, and its
page citations held to the pages the request covered.

`params` are as `tasks.validate` returns them. An answer that cannot be used raises
OutputError (the caller retries, then fails the job keeping the raw text); a usable one
with citations outside its pages is kept, with warnings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from referencing.exceptions import Unresolvable

from ingestion.tasks.prompts import Stage
from ingestion.tasks.schema import short
from ingestion.tasks.validation import VALIDATION_STEPS, ValidationBudgetExceeded, first_error

# One pattern for every task, prompt and answer alike: the "[page N]" markers of the
# document, the "[p. N]" the prompts ask for, and what models write anyway ("p. N",
# "[pages 3-5]", "[pp. 3, 7]"). A range counts by its two ends.
PAGE_CITATION = re.compile(
    r"\[(?:pages?|pp?\.)\s*(?P<list>[0-9]+(?:\s*(?:[-\u2013,]|and)\s*[0-9]+)*)\s*\]"
    r"|(?<![\w.])pp?\.\s?(?P<bare>[0-9]+(?:\s*[-\u2013]\s*[0-9]+)?)(?![0-9])"
)
_NUMBER = re.compile(r"[0-9]+")
_FENCE = re.compile(r"\A\s*```[A-Za-z]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)
MAX_WARNINGS = 20


@dataclass(frozen=True)
class TaskOutput:
    text: str | None
    """The human-readable result: the summary, the answers, the label..."""
    data: dict[str, Any] | None
    """The structured result: the extracted object, the answers, the label and reason."""
    warnings: tuple[str, ...] = ()


class OutputError(ValueError):
    """The model's answer cannot be used; `raw` is what it wrote."""

    def __init__(self, reason: str, raw: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


def cited_pages(text: str) -> Iterator[int]:
    """Every page number `text` cites, in order (both ends of a range)."""
    for match in PAGE_CITATION.finditer(text):
        for number in _NUMBER.findall(match.group("list") or match.group("bare")):
            # int() refuses thousands of digits; such a "page" is noise, not a citation.
            if len(number) <= 100:
                yield int(number)


def _outside(numbers: Iterator[int] | list[int], pages: tuple[int, int]) -> list[int]:
    first, last = pages
    return sorted({n for n in numbers if not first <= n <= last})


def _listed(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    more = f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    return f"page{'s' if len(numbers) > 1 else ''} {shown}{more}"


def _range(pages: tuple[int, int]) -> str:
    return f"page {pages[0]}" if pages[0] == pages[1] else f"pages {pages[0]}-{pages[1]}"


def _load_json(raw: str) -> object:
    # Structured output gives bare JSON; a server without it, or a model that ignores
    # the instruction, often wraps it in a Markdown fence.
    fenced = _FENCE.match(raw)
    text = fenced.group(1) if fenced else raw

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise OutputError(f"the answer is not valid JSON ({short(str(exc), 200)})", raw) from None


def _free_text(params: Mapping[str, Any], raw: str, pages: tuple[int, int]) -> TaskOutput:
    text = raw.strip()
    if not text:
        raise OutputError("the answer is empty", raw)
    bad = _outside(cited_pages(text), pages)
    warnings = [f"cites {_listed(bad)}, outside {_range(pages)}"] if bad else []
    return TaskOutput(text, None, tuple(warnings))


def _extract(params: Mapping[str, Any], raw: str, pages: tuple[int, int]) -> TaskOutput:
    value = _load_json(raw)
    if not isinstance(value, dict):
        raise OutputError("the answer is not a JSON object", raw)
    try:
        error = first_error(params["schema"], value)
    except ValidationBudgetExceeded:
        reason = (
            f"the answer is too large to check against the schema (over {VALIDATION_STEPS:,} "
            "validation steps)"
        )
        raise OutputError(reason, raw) from None
    except (RecursionError, Unresolvable, ValueError) as exc:
        raise OutputError(f"the answer cannot be checked against the schema ({exc})", raw) from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        at = f" at {short(where, 120)!r}" if where else ""
        reason = f"the answer does not match the schema{at}: {short(error.message, 300)}"
        raise OutputError(reason, raw)
    return TaskOutput(None, value, ())


def _ask(params: Mapping[str, Any], raw: str, pages: tuple[int, int]) -> TaskOutput:
    value = _load_json(raw)
    answers = value.get("answers") if isinstance(value, dict) else None
    if not isinstance(answers, list):
        raise OutputError('the answer is not a JSON object {"answers": [...]}', raw)
    questions: list[str] = list(params["questions"])
    if len(answers) != len(questions):
        raise OutputError(f"expected {len(questions)} answers, got {len(answers)}", raw)
    out: list[dict[str, Any]] = []
    warnings: list[str] = []
    lines: list[str] = []
    for i, (question, item) in enumerate(zip(questions, answers, strict=True), 1):
        if not isinstance(item, dict) or not isinstance(item.get("answer"), str):
            raise OutputError(f'answer {i} is not an object with an "answer" string', raw)
        listed = item.get("pages", [])
        if not isinstance(listed, list) or not all(type(p) is int for p in listed):
            raise OutputError(f'answer {i}: "pages" is not a list of page numbers', raw)
        answer = item["answer"].strip()
        in_text = list(cited_pages(answer))
        bad = _outside(listed, pages)
        bad_text = _outside(in_text, pages)
        if bad:
            warnings.append(f"answer {i} lists {_listed(bad)}, outside {_range(pages)}: dropped")
        if bad_text:
            warnings.append(f"answer {i} cites {_listed(bad_text)}, outside {_range(pages)}")
        # "pages" keeps what the text cites too: it is the list a client acts on.
        good = sorted({p for p in [*listed, *in_text] if pages[0] <= p <= pages[1]})
        invalid = sorted({*bad, *bad_text})
        # By position: the model's copy of the question may be reworded or cut short.
        entry = {"question": question, "answer": answer, "pages": good, "invalid_pages": invalid}
        out.append(entry)
        cited = f"\n(pages {', '.join(map(str, good))})" if good else ""
        lines.append(f"{i}. {question}\n{answer}{cited}")
    return TaskOutput("\n\n".join(lines), {"answers": out}, _capped(warnings))


def _match_label(label: str, labels: list[str]) -> str | None:
    if label in labels:
        return label
    # Labels are unique ignoring case (validate), so this finds at most one.
    folded = label.strip().casefold()
    return next((known for known in labels if known.casefold() == folded), None)


def _classify(params: Mapping[str, Any], raw: str, pages: tuple[int, int]) -> TaskOutput:
    labels: list[str] = list(params["labels"])
    try:
        value = _load_json(raw)
    except OutputError:
        # Without structured output a model may answer with the bare label.
        bare = _match_label(raw.strip().strip("\"'`*.").strip(), labels)
        if bare is None:
            raise
        value = {"label": bare, "reason": ""}
    if not isinstance(value, dict) or not isinstance(value.get("label"), str):
        raise OutputError('the answer is not a JSON object with a "label" string', raw)
    reason = value.get("reason", "")
    if not isinstance(reason, str):
        raise OutputError('"reason" is not a string', raw)
    label = _match_label(value["label"], labels)
    if label is None:
        raise OutputError(f"label {short(value['label'])!r} is not one of the labels", raw)
    bad = _outside(cited_pages(reason), pages)
    warnings = [f"the reason cites {_listed(bad)}, outside {_range(pages)}"] if bad else []
    return TaskOutput(label, {"label": label, "reason": reason.strip()}, tuple(warnings))


def _capped(warnings: list[str]) -> tuple[str, ...]:
    if len(warnings) <= MAX_WARNINGS:
        return tuple(warnings)
    more = len(warnings) - MAX_WARNINGS + 1
    return (*warnings[: MAX_WARNINGS - 1], f"and {more} more warnings")


_PARSERS: dict[str, Callable[[Mapping[str, Any], str, tuple[int, int]], TaskOutput]] = {
    "summarize": _free_text,
    "extract": _extract,
    "ask": _ask,
    "classify": _classify,
    "prompt": _free_text,
}


def parse_output(
    task: str, params: Mapping[str, Any], stage: Stage, raw: str, pages: tuple[int, int]
) -> TaskOutput:
    """The model's answer `raw` to a request of `stage` that covered `pages`, (first,
    last) 1-based and inclusive. Every stage answers in the same shape."""
    parser = _PARSERS.get(task)
    if parser is None:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(_PARSERS)}")
    first, last = pages
    if not 1 <= first <= last:
        raise ValueError(f"pages must be (first, last) with 1 <= first <= last, not {pages}")
    return parser(params, raw, pages)


def part_text(task: str, output: TaskOutput) -> str:
    """How one answer of `task` is shown to a reduce request (`task_prompts.render_parts`):
    the structured result as JSON where there is one, else the text."""
    if output.data is None:
        return output.text or ""
    data = output.data
    if task == "ask":
        # Pages the citation check dropped would only mislead the combining request.
        data = {
            "answers": [{k: a[k] for k in ("question", "answer", "pages")} for a in data["answers"]]
        }
    return json.dumps(data, ensure_ascii=False)
