"""Jobs on a page range of their document (`pages` in POST /v1/jobs), on real
Postgres and a really parsed corpus PDF, before any vLLM runs: the plan counts
exactly the tokens of those pages' text with each role's own tokenizer, routes on
that count (a few pages of a document that must be split fit one request), splits
within the range when the range is too long itself, and the request the worker
builds sends those pages and nothing else, under their real numbers. Bad ranges are
422s naming the field; a range past the end of a document parsed only later fails
the job with the reason.

The backends are rows of the backends table with the figures a refresher would
have measured (`test_job_plan_matches_route._deployment`); the document is parsed
in this process (no worker runs here), and the worker's planner and request builder
are called here too.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from ingestion.capacity.route_plan import MapStep, Plan
from ingestion.documents.textfile import spans_from_json
from ingestion.tasks.output import parse_output
from ingestion.tokens.counting import TokenCounter
from service.blobstore import BlobStore
from service.config import Settings
from service.db import get_sessionmaker
from service.jobs.request_tokens import page_overhead
from service.models import Document, DocumentTokenCount, Job, JobStatus
from tests.api.test_documents import upload
from tests.api.test_job_plan_matches_route import Case, _deployment, _small
from tests.conftest import _new_key, auth, corpus_file
from tests.routing.conftest import counter_for
from workers.ingest.tasks import run_ingest
from workers.jobs.text import build

DOC = "pdf/r-intro.pdf"
# Gemma holds 32K: the whole manual must be split, a few of its pages fit one request.
CASE = Case(DOC, "summarize", {}, 1024, _small(gemma=32_768), "single")
Client = Any


@pytest.fixture(scope="module")
def key(database: str) -> str:
    counter_for("gemma"), counter_for("scout")  # skip when the tokenizer files are missing
    return _new_key(f"pages-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def counters() -> dict[str, TokenCounter]:
    return {"gemma": counter_for("gemma"), "scout": counter_for("scout")}


@pytest.fixture(scope="module")
def deployed(key: str) -> Iterator[Settings]:
    with _deployment(CASE) as (_names, _env, settings):
        yield settings


@pytest.fixture(scope="module")
def doc(client: Client, key: str, deployed: Settings) -> str:
    r = upload(client, key, corpus_file(DOC))
    assert r.status_code in (200, 202), r.text
    doc_id: str = r.json()["id"]
    run_ingest(uuid.UUID(doc_id), "test:ingest", deployed)
    return doc_id


@pytest.fixture
def created(client: Client, key: str) -> Iterator[list[str]]:
    """Jobs a test made, cancelled after it (they must not wait for a server that is
    not there in the next module's time)."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))


def _post(client: Client, key: str, body: dict[str, Any], ids: list[str]) -> Any:
    r = client.post("/v1/jobs", headers=auth(key), json=body)
    if r.status_code in (200, 202):
        ids.append(r.json()["id"])
    return r


def _job(doc: str, pages: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"document_id": doc, "task": "summarize", "max_output_tokens": 1024, **extra}
    return body if pages is None else {**body, "pages": pages}


def _range_text(doc_id: str, first: int, last: int, settings: Settings) -> str:
    """Pages first..last as the text file holds them: one run of its bytes, from the
    first page's start to the last page's end (separators included)."""
    with get_sessionmaker()() as s:
        doc = s.get(Document, uuid.UUID(doc_id))
        assert doc is not None and doc.text_key is not None
        spans = {sp.number: sp for sp in spans_from_json(doc.page_map)}
        path = BlobStore(settings.blobs).path(doc.text_key)
    data = path.read_bytes()[spans[first].byte_start : spans[last].byte_end]
    return data.decode("utf-8")


def _plan(body: dict[str, Any]) -> Plan:
    assert body["plan"] is not None, body
    return Plan.from_json(body["plan"])


def _counts(plan: Plan) -> dict[str, int]:
    return {d.role: d.count for d in plan.document if d.role in ("gemma", "scout")}


def test_a_page_range_is_counted_exactly_and_routed_on_its_own_count(
    client: Client,
    key: str,
    doc: str,
    deployed: Settings,
    counters: dict[str, TokenCounter],
    created: list[str],
) -> None:
    whole = _post(client, key, _job(doc), created)
    assert whole.status_code == 202, whole.text
    part = _post(client, key, _job(doc, "30-34"), created)
    assert part.status_code == 202, part.text
    assert part.json()["pages"] == "30-34" and whole.json()["pages"] is None
    whole_plan, part_plan = _plan(whole.json()), _plan(part.json())
    # The whole manual needs a split at 32K; five of its pages are one request.
    assert whole_plan.kind == "map_reduce"
    assert part_plan.kind == "single" and part_plan.request is not None
    assert part_plan.request.role == "gemma"

    # The counted tokens are exactly those of the five pages' text, per tokenizer.
    text = _range_text(doc, 30, 34, deployed)
    assert "[page" not in text and len(text) > 1_000
    want = {role: c.count(text) for role, c in counters.items()}
    assert _counts(part_plan) == want
    assert all(d.exact for d in part_plan.document)
    # ... and the whole document's are what ingest stored (the same way of counting).
    with get_sessionmaker()() as s:
        stored = dict(
            s.execute(
                select(DocumentTokenCount.role, DocumentTokenCount.count).where(
                    DocumentTokenCount.document_id == uuid.UUID(doc)
                )
            ).all()
        )
        row = s.get(Document, uuid.UUID(doc))
        assert row is not None
        spans = spans_from_json(row.page_map)
    assert _counts(whole_plan) == {r: stored[r] for r in want}
    assert sum(want.values()) < sum(_counts(whole_plan).values())

    # The per-page overhead is that of those pages: their markers, not the document's.
    in_range = [sp for sp in spans if 30 <= sp.number <= 34]
    whole_prompt, part_prompt = dict(whole_plan.prompt_tokens), dict(part_plan.prompt_tokens)
    for role, counter in counters.items():
        saved = page_overhead(counter, spans) - page_overhead(counter, in_range)
        assert whole_prompt[role] - part_prompt[role] == saved

    shown = client.get(f"/v1/jobs/{part.json()['id']}", headers=auth(key)).json()
    assert shown["pages"] == "30-34" and shown["plan"] == part.json()["plan"]


def test_the_request_sends_only_those_pages_and_cites_only_them(
    client: Client, key: str, doc: str, deployed: Settings, created: list[str]
) -> None:
    r = _post(client, key, _job(doc, "41-43", task="ask", params={"questions": ["What?"]}), created)
    assert r.status_code == 202, r.text
    with get_sessionmaker()() as s:
        job = s.get(Job, uuid.UUID(r.json()["id"]))
        row = s.get(Document, uuid.UUID(doc))
        assert job is not None and row is not None and row.text_key is not None
        sent = build(s, job, row, BlobStore(deployed.blobs).path(row.text_key))
    assert sent.stage == "single" and sent.pages == (41, 43)
    content = sent.messages[1]["content"]
    for n in range(41, 44):
        assert f"[page {n}]\n" in content
    assert "[page 40]" not in content and "[page 44]" not in content
    assert _range_text(doc, 41, 41, deployed)[:200] in content
    # Citations are held to the pages the request saw: a real page number outside the
    # range is moved out of the answer's pages.
    raw = '{"answers": [{"answer": "see [p. 42]", "pages": [42, 7]}]}'
    out = parse_output("ask", {"questions": ["What?"]}, "single", raw, sent.pages)
    answer = out.data["answers"][0] if out.data else {}
    assert answer["pages"] == [42] and answer["invalid_pages"] == [7]


def test_a_range_too_long_for_one_request_is_split_within_it(
    client: Client, key: str, doc: str, deployed: Settings, created: list[str]
) -> None:
    r = _post(client, key, _job(doc, "11-80"), created)
    assert r.status_code == 202, r.text
    plan = _plan(r.json())
    assert plan.kind == "map_reduce" and len(plan.map) >= 2
    chunks = [step.chunk for step in plan.map]
    # The chunks tile the range, in order, and nothing outside it.
    assert chunks[0].first_page == 11 and chunks[-1].last_page == 80
    for a, b in itertools.pairwise(chunks):
        assert b.first_page in (a.last_page, a.last_page + 1)
    with get_sessionmaker()() as s:
        row = s.get(Document, uuid.UUID(doc))
        assert row is not None and row.text_key is not None
        spans = {sp.number: sp for sp in spans_from_json(row.page_map)}
        assert chunks[0].byte_start >= spans[11].byte_start
        assert chunks[-1].byte_end == spans[80].byte_end
        # A map request the worker builds sends its chunk's pages of the range.
        kids = s.scalars(select(Job).where(Job.parent_id == uuid.UUID(r.json()["id"]))).all()
        first = next(k for k in kids if isinstance(k.step, MapStep) and k.step.chunk.index == 0)
        sent = build(s, first, row, BlobStore(deployed.blobs).path(row.text_key))
    assert sent.stage == "map" and sent.pages[0] == 11
    assert "[page 11]\n" in sent.messages[1]["content"]
    assert "[page 10]" not in sent.messages[1]["content"]


def test_other_pages_are_another_job_and_the_same_pages_the_same(
    client: Client, key: str, doc: str, created: list[str]
) -> None:
    a = _post(client, key, _job(doc, "30-31"), created)
    assert a.status_code == 202, a.text
    again = _post(client, key, _job(doc, "30-31"), created)
    assert (again.status_code, again.json()["id"]) == (200, a.json()["id"])
    other = _post(client, key, _job(doc, "30-32"), created)
    assert other.status_code == 202 and other.json()["id"] != a.json()["id"]
    one = _post(client, key, _job(doc, "33"), created)
    same = _post(client, key, _job(doc, "33-33"), created)  # the same page, spelt otherwise
    assert (same.status_code, same.json()["id"]) == (200, one.json()["id"])
    assert same.json()["pages"] == "33"
    # A client's key names one request: the same key with other pages is refused.
    k = f"pages-{uuid.uuid4().hex}"
    mine = _post(client, key, _job(doc, "50-51", idempotency_key=k), created)
    assert mine.status_code == 202, mine.text
    reused = _post(client, key, _job(doc, "50-52", idempotency_key=k), created)
    assert reused.status_code == 409, reused.text
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    whole = _post(client, key, _job(doc, None, idempotency_key=k), created)
    assert whole.status_code == 409


def _jobs_on(doc: str) -> int:
    with get_sessionmaker()() as s:
        stmt = select(func.count()).select_from(Job).where(Job.document_id == uuid.UUID(doc))
        return int(s.scalar(stmt) or 0)


@pytest.mark.parametrize(
    ("pages", "code", "why"),
    [
        ("0-3", "bad_pages", "numbered from 1"),
        ("5-2", "bad_pages", "comes after"),
        ("a", "bad_pages", "not a page range"),
        ("1-", "bad_pages", "last page"),
        ("", "bad_pages", "not a page range"),
        ("99999999999", "bad_pages", "go up to"),
        ("1-3,10-12", "bad_pages", "one range only"),
        ("1-5,3-8", "bad_pages", "one range only"),
        ("1" * 33, "string_too_long", "32"),
        (7, "string_type", "string"),
        ("104-900", "pages_out_of_range", "past the end of the document"),
    ],
)
def test_bad_pages_are_422_naming_the_field(
    client: Client, key: str, doc: str, pages: Any, code: str, why: str
) -> None:
    before = _jobs_on(doc)
    r = client.post("/v1/jobs", headers=auth(key), json=_job(doc, pages))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == code and why in error["reason"], error
    assert error["field"] in ("body.pages", "pages")
    assert _jobs_on(doc) == before


def test_the_upload_takes_pages_for_its_job(client: Client, key: str, doc: str) -> None:
    path = corpus_file(DOC)
    with path.open("rb") as f:
        r = client.post(
            "/v1/documents",
            params={"task": "summarize", "pages": "3-1"},
            headers=auth(key),
            files={"file": (path.name, f)},
        )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "bad_pages"
    assert r.json()["error"]["field"] == "query.pages"
    with path.open("rb") as f:
        r = client.post(
            "/v1/documents",
            params={"pages": "3"},
            headers=auth(key),
            files={"file": (path.name, f)},
        )
    assert r.status_code == 422 and "without task" in r.json()["error"]["reason"], r.text
    with path.open("rb") as f:
        r = client.post(
            "/v1/documents",
            params={"task": "summarize", "pages": "2-3"},
            headers=auth(key),
            files={"file": (path.name, f)},
        )
    assert r.status_code == 200, r.text  # the document was uploaded before
    job = r.json()["job"]
    try:
        assert job["pages"] == "2-3" and job["plan"] is not None
        assert Plan.from_json(job["plan"]).kind == "single"
    finally:
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(key))


def test_a_range_past_the_end_of_a_document_parsed_later_fails_the_job(
    client: Client, deployed: Settings
) -> None:
    from workers.jobs.tasks import drive

    # A tenant of its own: its upload is a new document, not parsed yet.
    key = _new_key(f"pages-late-{uuid.uuid4().hex[:6]}")
    r = upload(client, key, corpus_file(DOC))
    assert r.status_code == 202, r.text
    doc_id = r.json()["id"]
    made = client.post("/v1/jobs", headers=auth(key), json=_job(doc_id, "100-5000"))
    assert made.status_code == 202, made.text
    assert made.json()["status"] == "queued" and made.json()["plan"] is None
    run_ingest(uuid.UUID(doc_id), "test:ingest", deployed)
    pages = client.get(f"/v1/documents/{doc_id}", headers=auth(key)).json()["page_count"]
    assert pages < 5000
    job_id = uuid.UUID(made.json()["id"])
    assert drive(job_id, "test:pages", deployed)["status"] == "failed"
    shown = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json()
    assert shown["status"] == JobStatus.failed.value
    assert shown["error"]["code"] == "pages_out_of_range"
    assert f"it has {pages:,} pages" in shown["error"]["reason"]
    assert "100-5000" in shown["error"]["reason"]
