"""The resume cursor of `GET /v1/batches/{id}/results` on the real services (Postgres,
the in-process API and a real uvicorn for the CLI), without vLLM: a batch is expanded
here with a dispatcher that sends nothing, so its jobs wait until a test ends them as
a worker would (succeeded with a result, failed, cancelled), in the order it picks.
Requests end out of line order; along a chain of cursors each comes exactly once."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.batches import expansion, lifecycle
from service.batches.result_cursor import Cursor, decode, encode, max_chars
from service.blobstore import BlobStore
from service.cli.batch import Results, _fetch_results
from service.config import get_settings
from service.db import get_sessionmaker
from service.errors import Invalid
from service.models import ApiKey, Batch, BatchItem, Job, JobStatus, Result, utcnow
from service.security import lookup_prefix
from tests.conftest import _new_key, api_settings, auth
from tests.hostile_archives import tar_bytes

CURSOR, MORE = "Longdoc-Next-Cursor", "Longdoc-More"


@pytest.fixture(scope="module")
def api_key(database: str) -> str:
    return _new_key(f"cursor-{uuid.uuid4().hex[:6]}")


def make_batch(key: str, n: int) -> tuple[str, dict[int, BatchItem]]:
    """A batch of `n` text entries, expanded: each a document, an item (lines 1..n)
    and a queued job that no worker is sent. Returns its public id and items by line."""
    with get_sessionmaker()() as s:
        tenant = s.scalar(select(ApiKey.tenant_id).where(ApiKey.prefix == lookup_prefix(key)))
    assert tenant is not None
    tag = uuid.uuid4().hex  # bytes no other test uploaded: documents of its own
    data = tar_bytes([(f"e{i:03}.txt", f"entry {i} of {tag}\n".encode()) for i in range(1, n + 1)])
    settings = get_settings()
    store = BlobStore(settings.blobs)
    sha = hashlib.sha256(data).hexdigest()
    store.archive(sha).parent.mkdir(parents=True, exist_ok=True)
    store.archive(sha).write_bytes(data)
    with get_sessionmaker()() as s:
        batch = Batch(
            tenant_id=tenant, sha256=sha, task="summarize", params={}, total=n,
            max_output_tokens=64, dedup_key=uuid.uuid4().hex,
            expires_at=utcnow() + timedelta(hours=1),
        )  # fmt: skip
        s.add(batch)
        s.commit()
        run = expansion.Expansion(settings, store, lambda _d: None, lambda _s, _i: None)
        assert expansion.expand(run, s, batch.id) == "expanded"
        rows = s.scalars(select(BatchItem).where(BatchItem.batch_id == batch.id)).all()
        items = {i.line: i for i in rows}
    assert sorted(items) == list(range(1, n + 1))
    return lifecycle.public_id(batch.id), items


def finish(items: dict[int, BatchItem], lines: list[int]) -> None:
    """End these lines' jobs as a worker would, each one of the three final ways."""
    with get_sessionmaker()() as s:
        for line in lines:
            job = s.get(Job, items[line].job_id)
            assert job is not None and job.status == JobStatus.queued
            job.finished_at = utcnow()
            if line % 3 == 0:
                job.status, job.error_code, job.error_reason = JobStatus.failed, "boom", "boom"
            elif line % 3 == 1:
                job.status = JobStatus.succeeded
                s.add(Result(job_id=job.id, text=f"summary {line}", request_id="r", model="m"))
            else:
                job.status, job.error_code, job.error_reason = JobStatus.cancelled, "c", "c"
        s.commit()


def page(client: Any, key: str, batch: str, after: str | None = None, **query: Any) -> Any:
    if after is not None:
        query["after"] = after
    resp = client.get(f"/v1/batches/{batch}/results", headers=auth(key), params=query)
    assert resp.status_code == 200, resp.text
    lines = [json.loads(x) for x in resp.text.splitlines()]
    return lines, resp.headers[CURSOR], resp.headers[MORE]


def numbers(lines: list[dict[str, Any]]) -> list[int]:
    return [int(x["custom_id"][1:4]) for x in lines]


def test_a_line_that_ends_after_later_ones_comes_on_the_next_call_and_nothing_else(
    client: Any, api_key: str
) -> None:
    batch, items = make_batch(api_key, 3)
    finish(items, [1, 3])
    first, cursor, more = page(client, api_key, batch)
    assert numbers(first) == [1, 3] and more == "false"
    assert first[0]["response"]["body"]["text"] == "summary 1"
    assert first[1]["error"]["code"] == "boom"
    assert decode(cursor, 1000) == Cursor(3, (2,))  # line 2 is the hole
    # Nothing new yet: the same cursor comes back, and nothing is sent twice.
    assert page(client, api_key, batch, cursor) == ([], cursor, "false")

    finish(items, [2])
    second, cursor, more = page(client, api_key, batch, cursor)
    assert numbers(second) == [2] and more == "false"
    assert second[0]["error"]["code"] == "c"
    assert decode(cursor, 1000) == Cursor(3, ())
    assert page(client, api_key, batch, cursor) == ([], cursor, "false")
    # Without a cursor: from the start, as before.
    assert numbers(page(client, api_key, batch)[0]) == [1, 2, 3]


@pytest.mark.parametrize(("limit", "holes"), [(1000, 1000), (3, 1000), (1000, 2), (2, 1), (1, 3)])
def test_every_line_comes_exactly_once_along_a_chain_in_random_finish_order(
    client: Any, api_key: str, limit: int, holes: int
) -> None:
    n = 20
    batch, items = make_batch(api_key, n)
    rng = random.Random(f"{limit}-{holes}")
    order = list(range(1, n + 1))
    rng.shuffle(order)
    finished: set[int] = set()
    got: list[int] = []
    cursor: str | None = None
    saw_more = False
    tight = get_settings().model_copy(update={"batch_results_max_holes": holes})
    with api_settings(tight):
        while True:
            k = rng.randint(0, 4)
            step, order = order[:k], order[k:]
            finish(items, step)
            finished.update(step)
            for _ in range(4 * n):  # every call that says more has moved on: bounded
                lines, cursor, more = page(client, api_key, batch, cursor, limit=limit)
                sent = numbers(lines)
                assert sent == sorted(sent)  # in line order
                assert set(sent) <= finished  # only what is final
                assert not set(sent) & set(got), f"sent again: {set(sent) & set(got)}"
                got += sent
                assert len(decode(cursor, holes).holes) <= holes
                saw_more |= more == "true"
                if more == "false":
                    break
            else:
                raise AssertionError("Longdoc-More stayed true")
            if not order:  # every line final, and the chain ran to its end
                break
    assert sorted(got) == list(range(1, n + 1))
    if limit < n or holes < n:
        assert saw_more  # a stop at the limit or at the cap said to go on


def cursor_of(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


HOSTILE = [
    "",
    "not base64!",
    "eyJtIjo",  # cut short
    "+/+/",  # standard base64, not url-safe
    cursor_of(b"not json"),
    cursor_of(b"\xff\xfe"),
    cursor_of([1, 2]),
    cursor_of({"m": 1}),
    cursor_of({"m": 1, "h": [], "x": 0}),
    cursor_of({"m": -1, "h": []}),
    cursor_of({"m": "3", "h": []}),
    cursor_of({"m": 3.0, "h": []}),
    cursor_of({"m": True, "h": []}),
    cursor_of({"m": 2**31, "h": []}),
    cursor_of({"m": 3, "h": 2}),
    cursor_of({"m": 3, "h": [-2]}),
    cursor_of({"m": 3, "h": [0]}),
    cursor_of({"m": 3, "h": [4]}),
    cursor_of({"m": 3, "h": [2, 2]}),
    cursor_of({"m": 3, "h": [2, 1]}),
    cursor_of({"m": 3, "h": [None]}),
    cursor_of({"m": 5000, "h": list(range(1, 1002))}),  # past the cap of 1,000
    cursor_of(b"[" * 5000),
    "A" * (max_chars(1000) + 1),
]


@pytest.fixture(scope="module")
def one(api_key: str) -> str:
    return make_batch(api_key, 1)[0]


@pytest.mark.parametrize("after", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_a_malformed_cursor_is_a_422_naming_after(
    client: Any, api_key: str, one: str, after: str
) -> None:
    resp = client.get(f"/v1/batches/{one}/results", headers=auth(api_key), params={"after": after})
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "bad_cursor" and "after" in error["message"]
    assert error["param"] == error["field"] == "query.after"


def test_a_bad_limit_and_a_cursor_past_a_smaller_cap_are_422s(
    client: Any, api_key: str, one: str
) -> None:
    url = f"/v1/batches/{one}/results"
    for limit in (0, 10_001):
        resp = client.get(url, headers=auth(api_key), params={"limit": limit})
        assert resp.status_code == 422 and resp.json()["error"]["field"] == "query.limit"
    three = encode(Cursor(9, (1, 2, 3)))
    assert client.get(url, headers=auth(api_key), params={"after": three}).status_code == 200
    with api_settings(get_settings().model_copy(update={"batch_results_max_holes": 2})):
        resp = client.get(url, headers=auth(api_key), params={"after": three})
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "query.after"


def test_a_cursor_reads_back_as_it_was_handed_out() -> None:
    for cursor in (Cursor(), Cursor(7, (2, 5)), Cursor(2**31 - 1, tuple(range(1, 1001)))):
        text = encode(cursor)
        assert decode(text, 1000) == cursor and len(text) <= max_chars(1000)
        assert "=" not in text
    with pytest.raises(Invalid):
        decode(encode(Cursor(7, (2, 5))), 1)


def test_the_cli_carries_the_cursor_between_polls_and_writes_each_result_once(
    live_server: tuple[str, int], api_key: str, tmp_path: Path
) -> None:
    batch, items = make_batch(api_key, 5)
    out = tmp_path / "results.jsonl"
    results = Results(out)
    sent: list[httpx.URL] = []
    base = f"http://{live_server[0]}:{live_server[1]}"
    hooks = {"request": [lambda r: sent.append(r.url)]}
    tight = get_settings().model_copy(update={"batch_results_max_holes": 1})
    with api_settings(tight), httpx.Client(base_url=base, headers=auth(api_key),
                                           event_hooks=hooks) as client:  # fmt: skip
        finish(items, [3, 4, 5])
        # Line 1 is the one hole the cap allows and line 2 stops the scan there: the
        # first page moved on (more), the second could not, and the poll ends.
        _fetch_results(client, batch, results)
        assert [u.params.get("after") for u in sent] == [None, results.cursor]
        assert decode(results.cursor or "", 1) == Cursor(1, (1,))
        assert out.read_text() == ""
        finish(items, [1, 2])
        _fetch_results(client, batch, results)
        assert sent[2].params["after"] == sent[1].params["after"]  # kept between polls
        assert numbers([json.loads(x) for x in out.read_text().splitlines()]) == [1, 2, 3, 4, 5]
        _fetch_results(client, batch, results)
    assert results.written == 5 and len(out.read_text().splitlines()) == 5
    # A run resuming the file starts from the first line and writes nothing again.
    again = Results(out)
    with httpx.Client(base_url=base, headers=auth(api_key)) as client:
        _fetch_results(client, batch, again)
    assert again.written == 0 and len(out.read_text().splitlines()) == 5
