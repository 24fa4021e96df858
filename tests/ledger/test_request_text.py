"""What each request of a job sends (`workers.jobs.text.build`), read from the typed plan
and steps as stored, on Postgres and SQLite: a map request its chunk's pages (exactly
the bytes its step names), a reduce request the answers of its inputs, labelled with
their pages; a single request the whole document. No model is called."""

from __future__ import annotations

import uuid
from pathlib import Path

from ingestion.capacity.route_plan import (
    Chunk,
    DocTokens,
    MapStep,
    Plan,
    ReduceGroup,
    ReduceLevel,
    Request,
)
from ingestion.documents.textfile import PageSpan, spans_to_json, write_pages
from ingestion.types import PageText
from service.jobs import tree
from service.models import Document, Job, JobStatus, Result
from tests.ledger.conftest import T0, World
from tests.ledger.test_tree import _parent
from tests.plans import single_plan
from workers.jobs.text import build

PAGES = ["Alpha page one.", "Beta page two.\n\nIts second paragraph.", "Gamma page three."]


def _document(world: World, path: Path) -> list[PageSpan]:
    with path.open("wb") as f:
        spans = write_pages([PageText(i + 1, t) for i, t in enumerate(PAGES)], f)
    with world.sessions() as s:
        doc = s.get(Document, world.doc)
        assert doc is not None
        doc.page_map = spans_to_json(spans)
        s.commit()
    return spans


def _chunk(index: int, first: PageSpan, last: PageSpan) -> Chunk:
    return Chunk(index, first.number, last.number, first.char_start, last.char_end,
                 first.byte_start, last.byte_end, 10, True)  # fmt: skip


def _req(role: str, n: int) -> Request:
    return Request(role, "test-model", n, 8, 1000, 10, ("b",))


def _built(world: World, job_id: uuid.UUID, path: Path) -> tuple[str, tuple[int, int], str, int]:
    with world.sessions() as s:
        job, doc = s.get(Job, job_id), s.get(Document, world.doc)
        assert job is not None and doc is not None
        out = build(s, job, doc, path)
    return out.stage, out.pages, out.messages[-1]["content"], out.input_tokens


def _kids(world: World, parent_id: uuid.UUID) -> list[uuid.UUID]:
    with world.sessions() as s:
        return [k.id for k in tree.children(s, parent_id)]


def test_map_and_reduce_requests_send_what_their_steps_name(world: World, tmp_path: Path) -> None:
    path = tmp_path / "doc.txt"
    a, b, c = _document(world, path)
    plan = Plan(
        "map_reduce",
        8,
        (DocTokens(world.role, 30, True),),
        ((world.role, 20),),
        None,
        (
            MapStep(_chunk(0, a, b), _req(world.role, 31)),
            MapStep(_chunk(1, c, c), _req(world.role, 32)),
        ),
        (ReduceLevel(1, (ReduceGroup(0, 1, _req(world.role, 40)),)),),
    )
    parent_id = _parent(world, JobStatus.queued)
    with world.sessions() as s:
        parent = s.get(Job, parent_id)
        assert parent is not None
        tree.start(s, parent, plan, T0, {0: 1.0, 1: 1.0, 2: 1.0})
        s.commit()
    first, second = _kids(world, parent_id)
    stage, pages, content, tokens = _built(world, first, path)
    assert (stage, pages, tokens) == ("map", (1, 2), 31)
    assert "[page 1]\nAlpha page one." in content and "Its second paragraph." in content
    assert "Gamma" not in content
    stage, pages, content, tokens = _built(world, second, path)
    assert (stage, pages, tokens) == ("map", (3, 3), 32)
    assert "[page 3]\nGamma page three." in content and "Alpha" not in content
    new: list[uuid.UUID] = []
    for kid, answer in ((first, "answer A"), (second, "answer C")):
        with world.sessions() as s:
            job = s.get(Job, kid)
            assert job is not None
            job.status = JobStatus.succeeded
            s.add(Result(job_id=kid, text=answer))
            s.flush()
            new += tree.fan_in(s, job, T0, lambda r: 1.0)[0]
            s.commit()
    (reduce_id,) = new
    stage, pages, content, tokens = _built(world, reduce_id, path)
    assert (stage, pages, tokens) == ("reduce", (1, 3), 40)
    assert "[part 1: pages 1-2]\nanswer A" in content
    assert "[part 2: page 3]\nanswer C" in content


def test_a_single_request_sends_the_whole_document(world: World, tmp_path: Path) -> None:
    path = tmp_path / "doc.txt"
    _document(world, path)
    job_id = world.job(1000, plan=single_plan(world.role, 50, 8))
    stage, pages, content, tokens = _built(world, job_id, path)
    assert (stage, pages, tokens) == ("single", (1, 3), 50)
    assert all(f"[page {n}]\n" in content for n in (1, 2, 3))
