"""What one request of a job sends: the chat messages and the pages they cover.

A single request sends the whole document (or the job's page range of it), a map
request its chunk's bytes of the text file (exactly the text the router counted; a
page range's chunks lie within it), a reduce request the answers of the requests it
combines, each labelled with its pages; a chat request its messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ingestion.capacity.route_plan import MapStep
from ingestion.documents.textfile import PageSpan, spans_from_json
from ingestion.tasks.output import TaskOutput, part_text
from ingestion.tasks.prompts import Stage, build_messages, render_pages, render_parts
from service.jobs.lifecycle import job_pages
from service.jobs.tree import children, group_pages
from service.models import Document, Job, JobStatus, Result


@dataclass(frozen=True)
class RequestText:
    stage: Stage
    messages: list[dict[str, Any]]
    pages: tuple[int, int]
    input_tokens: int
    output_tokens: int


def _read_range(path: Path, spans: list[PageSpan], start: int, end: int) -> list[tuple[int, str]]:
    """(page, text) for the parts of pages inside bytes [start, end) of the text file."""
    out = []
    with path.open("rb") as f:
        for span in spans:
            a, b = max(span.byte_start, start), min(span.byte_end, end)
            if a >= b:
                continue
            f.seek(a)
            out.append((span.number, f.read(b - a).decode("utf-8")))
    return out


def _answer(task: str, result: Result) -> str:
    return part_text(task, TaskOutput(result.text, result.data, ()))


def build(session: Session, job: Job, doc: Document, text_path: Path) -> RequestText:
    spans = spans_from_json(doc.page_map or [])
    step = job.step
    if step is None:  # a single request: the whole document, or the job's pages of it
        assert job.plan is not None and job.plan.request is not None
        req = job.plan.request
        wanted = job_pages(job)
        if wanted is not None:
            spans = [s for s in spans if s.number in wanted]
        start, end = (spans[0].byte_start, spans[-1].byte_end) if spans else (0, 0)
        pages = (spans[0].number, spans[-1].number) if spans else (1, 1)
        text = render_pages(_read_range(text_path, spans, start, end))
        stage: Stage = "single"
    elif isinstance(step, MapStep):
        req, chunk = step.request, step.chunk
        pages = (chunk.first_page, chunk.last_page)
        text = render_pages(_read_range(text_path, spans, chunk.byte_start, chunk.byte_end))
        stage = "map"
    else:
        req = step.request
        parent = session.get(Job, job.parent_id)
        assert parent is not None and parent.plan is not None
        plan = parent.plan
        level, first, last = step.level, step.first, step.last
        pages = group_pages(plan, level, step.group)
        inputs = _inputs(session, parent.id, level - 1, first, last)
        parts = [(_label(group_pages(plan, level - 1, i)), _answer(job.task, r)) for i, r in inputs]
        text = render_parts(parts)
        stage = "reduce"
    messages = build_messages(job.task, job.params, stage, text)
    return RequestText(stage, messages, pages, req.input_tokens, req.output_tokens)


def chat(job: Job) -> RequestText:
    """A chat request sends its messages as the client gave them (no document)."""
    assert job.plan is not None and job.plan.request is not None, "planned at creation"
    req = job.plan.request
    messages = list(job.params["messages"])
    return RequestText("single", messages, (1, 1), req.input_tokens, req.output_tokens)


def _label(pages: tuple[int, int]) -> str:
    a, b = pages
    return f"page {a}" if a == b else f"pages {a}-{b}"


def _inputs(
    session: Session, parent_id: Any, level: int, first: int, last: int
) -> list[tuple[int, Result]]:
    want = {}
    for kid in children(session, parent_id):
        assert kid.step is not None, "a map-reduce job's children are its requests"
        lv, idx = kid.step.key
        if lv == level and first <= idx <= last and kid.status == JobStatus.succeeded:
            want[kid.id] = idx
    results = session.scalars(select(Result).where(Result.job_id.in_(list(want))))
    out = sorted(((want[r.job_id], r) for r in results), key=lambda p: p[0])
    if len(out) != last - first + 1:
        raise RuntimeError(f"reduce inputs {first}-{last} at level {level} are not all done")
    return out
