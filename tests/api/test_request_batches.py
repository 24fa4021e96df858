"""Request-file batches (OpenAI's Batch API, endpoint `/v1/jobs`) driven by the
official `openai` SDK, unchanged, against a real uvicorn server and a real Celery
worker, without vLLM: a job fails (no backend) once its document is parsed, which is
what lets a batch whose requests all failed end `completed` with an error file and
no output file. Validation failures name their lines; a line on a document the
tenant has not is that request's own error line."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from service.batches import lifecycle, outputs, request_lines
from service.blobstore import BlobStore
from service.config import get_settings
from service.db import get_sessionmaker
from service.documents import ReceivedFile, mark_dispatched, register_upload
from service.models import (
    Batch,
    BatchItem,
    BatchItemStatus,
    BatchStatus,
    File,
    Job,
    JobStatus,
    utcnow,
)
from tests.api.test_archive_batches import _tenant
from tests.conftest import _new_key, auth, wait_for


@pytest.fixture(scope="module")
def api_key(database: str) -> str:
    """A tenant of this module's own: corpus files that other modules upload must not
    come back here as existing documents (dedup), nor this module's go there."""
    return _new_key(f"request-batches-{uuid.uuid4().hex[:6]}")


def upload_doc(client: Any, key: str) -> str:
    body = f"A document of a request batch, {uuid.uuid4()}.\n".encode() * 20
    resp = client.post("/v1/documents", headers=auth(key), files={"file": ("d.txt", body)})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def line(cid: str, body: dict[str, Any], url: str = "/v1/jobs", method: str = "POST") -> str:
    return json.dumps({"custom_id": cid, "method": method, "url": url, "body": body})


def upload(sdk_client: openai.OpenAI, lines: list[str]) -> str:
    data = ("\n".join(lines) + "\n").encode()
    return sdk_client.files.create(file=("requests.jsonl", data), purpose="batch").id


def create(sdk_client: openai.OpenAI, file_id: str, endpoint: str = "/v1/jobs") -> Any:
    # The SDK types `endpoint` as OpenAI's own list; other strings go through as given.
    return sdk_client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"suite": "request-batches"},
    )


def settled(sdk_client: openai.OpenAI, batch_id: str, *states: str) -> Any:
    def done() -> Any:
        got = sdk_client.batches.retrieve(batch_id)
        return got if got.status in states else None

    return wait_for(done, what=f"batch {batch_id} {'/'.join(states)}")


def content_lines(sdk_client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    text = sdk_client.files.content(file_id).text
    return [json.loads(x) for x in text.splitlines()]


def jobs_of(batch_id: str) -> int:
    with get_sessionmaker()() as s:
        stmt = select(func.count()).where(Job.batch_id == lifecycle.parse_id(batch_id))
        return s.scalar(stmt) or 0


def test_a_batch_whose_expansion_was_lost_is_sent_again_once_a_window(
    api_key: str, database: str
) -> None:
    """First in the module: no worker yet, whose own advance would send it first."""
    from datetime import timedelta

    with get_sessionmaker()() as s:
        old = utcnow() - 2 * lifecycle.UNSENT_AFTER
        batch = Batch(tenant_id=_tenant(api_key), kind="openai", created_at=old)
        s.add(batch)
        s.commit()
        batch_id = str(batch.id)
    sent: list[str] = []
    sessions = get_sessionmaker()
    lifecycle.advance_all(sessions, lambda _t: None, sent.append)
    lifecycle.advance_all(sessions, lambda _t: None, sent.append)  # within the window
    assert sent.count(batch_id) == 1
    with sessions() as s:
        stmt = Batch.__table__.update().where(Batch.id == uuid.UUID(batch_id))
        s.execute(stmt.values(resent_at=utcnow() - timedelta(minutes=5)))
        s.commit()
    lifecycle.advance_all(sessions, lambda _t: None, sent.append)
    assert sent.count(batch_id) == 2
    with sessions() as s:
        stmt = Batch.__table__.update().where(Batch.id == uuid.UUID(batch_id))
        s.execute(stmt.values(status=BatchStatus.cancelled))
        s.commit()


def test_a_request_file_runs_its_lines_as_jobs_and_the_error_file_fills(
    client: Any, api_key: str, other_key: str, worker: Any, ours: openai.OpenAI
) -> None:
    mine, not_mine = upload_doc(client, api_key), upload_doc(client, other_key)
    lines = [
        line("own", {"document_id": mine, "task": "summarize", "max_output_tokens": 64}),
        line("theirs", {"document_id": not_mine, "task": "summarize"}),
        line("bad-task", {"document_id": mine, "task": "nope"}),
        line("no-doc", {"document_id": str(uuid.uuid4()), "task": "summarize"}),
        line("bad-body", {"document": mine}),
        # A body's pages pass through to its job, and are checked as the API checks them.
        line("pages", {"document_id": mine, "task": "summarize", "pages": "1-1"}),
        line("bad-pages", {"document_id": mine, "task": "summarize", "pages": "0-1"}),
    ]
    file_id = upload(ours, lines)
    made = create(ours, file_id)
    assert made.id.startswith("batch_") and made.object == "batch"
    assert (made.endpoint, made.input_file_id, made.completion_window) == (
        "/v1/jobs", file_id, "24h"
    )  # fmt: skip
    assert made.status in ("validating", "in_progress") and made.metadata == {
        "suite": "request-batches"
    }
    assert made.expires_at is not None and made.expires_at - made.created_at == 24 * 3600

    running = settled(ours, made.id, "in_progress", "finalizing", "completed")
    assert running.in_progress_at is not None and running.errors is None
    # The same file again, and the same bytes uploaded again: the same batch.
    assert create(ours, file_id).id == made.id
    assert create(ours, upload(ours, lines)).id == made.id

    done = settled(ours, made.id, "completed")
    counts = done.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (7, 0, 7)
    assert done.output_file_id is None and done.error_file_id is not None
    assert done.finalizing_at is not None and done.completed_at >= done.finalizing_at
    errors = content_lines(ours, done.error_file_id)
    assert [e["custom_id"] for e in errors] == [
        "own", "theirs", "bad-task", "no-doc", "bad-body", "pages", "bad-pages"
    ]  # fmt: skip
    by_id = {e["custom_id"]: e for e in errors}
    assert all(e["id"].startswith("batch_req_") and e["response"] is None for e in errors)
    assert by_id["theirs"]["error"]["code"] == "not_found"
    assert by_id["no-doc"]["error"]["code"] == "not_found"
    assert by_id["bad-task"]["error"]["code"] == "bad_params"
    assert by_id["bad-body"]["error"]["code"] == "invalid_body"
    bad_pages = by_id["bad-pages"]["error"]
    assert bad_pages["code"] == "invalid_body" and "body.pages" in bad_pages["message"]
    assert "numbered from 1" in bad_pages["message"]
    with get_sessionmaker()() as s:
        item = s.scalar(
            select(BatchItem).where(
                BatchItem.batch_id == lifecycle.parse_id(made.id), BatchItem.custom_id == "own"
            )
        )
        assert item is not None and item.job_id is not None
        job = s.get(Job, item.job_id)
        assert job is not None and job.status == JobStatus.failed
        assert (job.task, job.max_output_tokens) == ("summarize", 64)
        assert by_id["own"]["error"]["code"] == job.error_code
        paged = s.scalar(
            select(Job)
            .join(BatchItem, BatchItem.job_id == Job.id)
            .where(
                BatchItem.batch_id == lifecycle.parse_id(made.id), BatchItem.custom_id == "pages"
            )
        )
        assert paged is not None and paged.pages == "1" and job.pages is None
    # The same lines as the results endpoint gives, from the same builder.
    resp = client.get(f"/v1/batches/{made.id}/results", headers=auth(api_key))
    assert [json.loads(x) for x in resp.text.splitlines()] == errors
    shown = ours.files.retrieve(done.error_file_id)
    assert (shown.purpose, shown.status) == ("batch_output", "processed")
    raw = ours.files.content(done.error_file_id).content
    assert shown.bytes == len(raw)
    with get_sessionmaker()() as s:
        row = s.get(File, uuid.UUID(hex=done.error_file_id.removeprefix("file-")))
        assert row is not None and row.sha256 == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize(
    ("lines", "code", "bad_line"),
    [
        (['{"custom_id": "a", "method": "POST", "url": "/v1/jobs", "body": {}}', "{not json"],
         "invalid_json", 2),
        ([line("a", {}), line("b", {}), line("a", {})], "duplicate_custom_id", 3),
        ([line("a", {}), line("b", {}, url="/v1/chat/completions")], "mismatched_url", 2),
        ([line("a", {}, method="GET")], "invalid_method", 1),
        (['{"method": "POST", "url": "/v1/jobs", "body": {}}'], "missing_custom_id", 1),
    ],
)  # fmt: skip
def test_a_bad_line_fails_the_batch_at_validation_naming_it_and_no_job_is_made(
    worker: Any, ours: openai.OpenAI, lines: list[str], code: str, bad_line: int
) -> None:
    made = create(ours, upload(ours, [*lines, line(uuid.uuid4().hex, {})]))
    failed = settled(ours, made.id, "failed", "in_progress", "completed")
    assert failed.status == "failed" and failed.failed_at is not None
    assert failed.errors is not None and failed.errors.data
    first = failed.errors.data[0]
    assert (first.code, first.line) == (code, bad_line) and first.message
    assert failed.output_file_id is None and failed.error_file_id is None
    assert jobs_of(made.id) == 0
    with get_sessionmaker()() as s:
        stmt = select(func.count()).where(BatchItem.batch_id == lifecycle.parse_id(made.id))
        assert s.scalar(stmt) == 0


def test_an_endpoint_not_served_fails_the_batch(ours: openai.OpenAI, database: str) -> None:
    made = create(ours, upload(ours, [line("a", {})]), endpoint="/v1/embeddings")
    assert made.status == "failed" and made.errors is not None and made.errors.data
    assert made.errors.data[0].code == "invalid_endpoint" and made.errors.data[0].line is None
    assert ours.batches.retrieve(made.id).status == "failed"
    with pytest.raises(openai.UnprocessableEntityError):
        ours.batches.create(
            input_file_id=made.input_file_id,
            endpoint="/v1/jobs",  # type: ignore[arg-type]
            completion_window="3d",  # type: ignore[arg-type]
        )
    with pytest.raises(openai.NotFoundError):
        create(ours, "file-" + uuid.uuid4().hex)


def test_validation_limits_and_blank_lines(database: str) -> None:
    """The reader's own bounds, on bytes: an over-long line is cut, not held; one
    request too many stops the reading; blank lines are not requests."""
    import io

    good = [line(f"r{i}", {}).encode() for i in range(3)]
    data = b"\n\n".join(good) + b"\n" + b'{"x": "' + b"y" * 5000 + b'"}\n'
    total, errors = request_lines.validate(io.BytesIO(data), "/v1/jobs", 10, 1000)
    assert total == 3 and [(e.code, e.line) for e in errors] == [("line_too_long", 6)]
    total, errors = request_lines.validate(io.BytesIO(b"\n".join(good)), "/v1/jobs", 2, 1000)
    assert [(e.code, e.line) for e in errors] == [("too_many_requests", 3)]
    total, errors = request_lines.validate(io.BytesIO(b"\n \n"), "/v1/jobs", 2, 1000)
    assert (total, [e.code for e in errors]) == (0, ["empty_file"])
    bomb = b"[" * 100_000 + b"]" * 100_000
    nul = line("a\x00b", {}).encode()
    total, errors = request_lines.validate(io.BytesIO(bomb + b"\n" + nul), "/v1/jobs", 9, 10**6)
    assert [(e.code, e.line) for e in errors] == [("invalid_json", 1), ("invalid_custom_id", 2)]


def _queued_document(key: str) -> str:
    """A document of the tenant's that counts as sent to be parsed but never is (the
    sweeper leaves it for an hour): its jobs wait, unfinished, until a cancel."""
    store = BlobStore(get_settings().blobs)
    fd, tmp = store.temp_file()
    body = f"Waits for a parse, {uuid.uuid4()}.\n".encode()
    with open(fd, "wb") as f:
        f.write(body)
    received = ReceivedFile(tmp, hashlib.sha256(body).hexdigest(), len(body), "w.txt", body)
    with get_sessionmaker()() as s:
        doc, created = register_upload(s, store, _tenant(key), received)
        assert created
        mark_dispatched(s, [doc.id])
        return str(doc.id)


def test_cancel_ends_unfinished_jobs_and_their_lines_go_to_the_error_file(
    api_key: str, worker: Any, ours: openai.OpenAI, theirs: openai.OpenAI
) -> None:
    doc = _queued_document(api_key)
    lines = [line(f"r{i}", {"document_id": doc, "task": "summarize"}) for i in range(3)]
    lines.insert(1, line("gone", {"document_id": str(uuid.uuid4()), "task": "summarize"}))
    made = create(ours, upload(ours, lines))

    def first_error() -> Any:
        got = ours.batches.retrieve(made.id)
        return got if got.error_file_id is not None and jobs_of(made.id) == 3 else None

    # While the others wait, the request that failed is counted and its line written.
    running = wait_for(first_error, what="the first error line written")
    assert running.status == "in_progress" and running.output_file_id is None
    counts = running.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (4, 0, 1)
    assert [e["custom_id"] for e in content_lines(ours, running.error_file_id)] == ["gone"]
    assert ours.files.retrieve(running.error_file_id).status == "uploaded"  # still growing
    with pytest.raises(openai.NotFoundError):
        theirs.batches.cancel(made.id)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.retrieve(made.id)
    cancelled = ours.batches.cancel(made.id)
    assert cancelled.status in ("cancelling", "cancelled") and cancelled.cancelling_at
    done = settled(ours, made.id, "cancelled")
    counts = done.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (4, 0, 1)
    with get_sessionmaker()() as s:
        jobs = s.scalars(select(Job).where(Job.batch_id == lifecycle.parse_id(made.id))).all()
        assert {(j.status, j.error_code) for j in jobs} == {(JobStatus.cancelled, "cancelled")}
    assert done.output_file_id is None and done.error_file_id == running.error_file_id
    errors = content_lines(ours, done.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [
        ("gone", "not_found"), ("r0", "cancelled"), ("r1", "cancelled"), ("r2", "cancelled")
    ]  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        theirs.files.content(done.error_file_id)


def test_list_pages_newest_first_and_other_tenants_see_none(
    ours: openai.OpenAI, theirs: openai.OpenAI, database: str
) -> None:
    file_id = upload(ours, [line("a", {})])
    made = [create(ours, file_id, endpoint=f"/v1/unknown/{i}").id for i in range(3)]
    page = ours.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    every = [b.id for b in ours.batches.list(limit=2)]  # the SDK follows `after`
    assert every[:3] == made[::-1] and len(every) == len(set(every))
    assert not {b.id for b in theirs.batches.list(limit=100)} & set(every)
    with pytest.raises(openai.NotFoundError):
        theirs.batches.create(input_file_id=file_id, endpoint="/v1/jobs", completion_window="24h")  # type: ignore[arg-type]


def test_a_line_is_written_once_though_the_commit_after_it_is_lost(
    api_key: str, database: str
) -> None:
    """As if the worker died between appending lines and committing them: the next
    step cuts the file back to its committed size and writes them again, once."""
    store = BlobStore(get_settings().blobs)
    with get_sessionmaker()() as s:
        batch = Batch(tenant_id=_tenant(api_key), kind="openai", status=BatchStatus.in_progress)
        s.add(batch)
        s.flush()

        def fail(n: int) -> None:
            failed = BatchItemStatus.failed
            s.add(BatchItem(batch_id=batch.id, custom_id=f"c{n}", line=n, status=failed))

        fail(1)
        s.commit()
        assert outputs.write(s, store, batch, 100) == 1
        s.commit()
        fail(2)
        fail(3)
        s.commit()
        assert outputs.write(s, store, batch, 100) == 2
        s.rollback()  # the lost commit: the bytes are in the file, not counted
        assert outputs.write(s, store, batch, 100) == 2
        s.commit()
        assert outputs.write(s, store, batch, 100) == 0 and outputs.unwritten(s, batch.id) == 0
        row = s.get(File, batch.error_file_id)
        assert row is not None and batch.output_file_id is None
        text = store.path(row.blob_key).read_bytes()
        assert len(text) == row.size_bytes
        assert [json.loads(x)["custom_id"] for x in text.splitlines()] == ["c1", "c2", "c3"]


def test_the_sdk_reads_the_code_and_the_field_off_a_refusal(ours: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as info:
        ours.batches.create(
            input_file_id=upload(ours, [line("a", {})]),
            endpoint="/v1/jobs",  # type: ignore[arg-type]
            completion_window="1000h",  # type: ignore[arg-type]
        )
    assert (info.value.code, info.value.param) == ("bad_window", "body.completion_window")
    with pytest.raises(openai.NotFoundError) as missing:
        ours.batches.retrieve("batch_" + "0" * 32)
    assert missing.value.code == "not_found" and missing.value.param is None
