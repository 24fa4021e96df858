"""Anthropic Message Batches driven by the official `anthropic` SDK, unchanged, against a
real uvicorn server and a real Celery worker, without vLLM: each request runs as a
chat job, which fails here (no backend serves it), so every result is `errored` with
its reason. A bad request refuses the whole batch with the request named, and nothing
is kept; the same body again is the same batch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from sqlalchemy import delete, func, select, update

from service.backends.probe import normalize_url
from service.batches import lifecycle
from service.config import get_settings
from service.db import get_sessionmaker
from service.deployment import BackendConfig
from service.models import Backend, Batch, BatchItem, BatchStatus, File, Job
from tests.api.test_archive_batches import _tenant
from tests.conftest import _new_key, api_settings, wait_for


@pytest.fixture(scope="module")
def api_key(database: str) -> str:
    return _new_key(f"message-batches-{uuid.uuid4().hex[:6]}")


def _sdk(base: str, key: str) -> anthropic.Anthropic:
    # No retries: each refusal must come from the one request the test made.
    return anthropic.Anthropic(api_key=key, base_url=base, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def claude(base: str, api_key: str) -> Iterator[anthropic.Anthropic]:
    with _sdk(base, api_key) as client:
        yield client


@pytest.fixture(scope="module")
def stranger(base: str, other_key: str) -> Iterator[anthropic.Anthropic]:
    with _sdk(base, other_key) as client:
        yield client


def request(cid: str, text: str = "Say hello.", **params: Any) -> dict[str, Any]:
    asked = {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": cid, "params": {**asked, **params}}


def ended(client: anthropic.Anthropic, batch_id: str) -> Any:
    def done() -> Any:
        got = client.messages.batches.retrieve(batch_id)
        return got if got.processing_status == "ended" else None

    return wait_for(done, what=f"message batch {batch_id} to end")


def rows(model: Any, batch_id: str) -> int:
    with get_sessionmaker()() as s:
        column = model.batch_id if model is not Batch else model.id
        stmt = select(func.count()).select_from(model).where(column == lifecycle.parse_id(batch_id))
        return s.scalar(stmt) or 0


def test_a_message_batch_runs_its_requests_and_their_results_read_back(
    claude: anthropic.Anthropic, stranger: anthropic.Anthropic, api_key: str, worker: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    asked = [
        request(f"plain-{tag}"),
        request(f"system-{tag}", system="Answer in one word.", temperature=0.5),
        request(f"blocks-{tag}", "ignored", messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "And again?"},
        ]),
    ]  # fmt: skip
    made = claude.messages.batches.create(requests=asked)  # type: ignore[arg-type]
    assert made.type == "message_batch" and made.id.startswith("batch_")
    assert made.processing_status == "in_progress" and made.results_url is None
    assert (made.expires_at - made.created_at).total_seconds() == 24 * 3600
    counts = made.request_counts
    assert counts.processing + counts.succeeded + counts.errored == 3
    # The same body again: the same batch, not a second one.
    assert claude.messages.batches.create(requests=asked).id == made.id  # type: ignore[arg-type]

    done = ended(claude, made.id)
    assert done.ended_at is not None and done.results_url is not None
    assert done.results_url.endswith(f"/v1/messages/batches/{made.id}/results")
    counts = done.request_counts
    assert (counts.processing, counts.errored, counts.canceled, counts.expired) == (0, 3, 0, 0)
    results = list(claude.messages.batches.results(made.id))
    assert [r.custom_id for r in results] == [r["custom_id"] for r in asked]
    with get_sessionmaker()() as s:
        jobs = {
            item.custom_id: s.get(Job, item.job_id) if item.job_id else None
            for item in s.scalars(
                select(BatchItem).where(BatchItem.batch_id == lifecycle.parse_id(made.id))
            )
        }
    for r in results:
        assert r.result.type == "errored"
        message = r.result.error.error.message
        job = jobs[r.custom_id]
        reason = job.error_reason if job is not None else None
        assert message and (reason is None or reason in message), (message, reason)

    listed = claude.messages.batches.list(limit=100)
    assert made.id in [b.id for b in listed.data]
    assert made.id not in [b.id for b in stranger.messages.batches.list(limit=100).data]
    with pytest.raises(anthropic.NotFoundError):
        stranger.messages.batches.retrieve(made.id)
    with pytest.raises(anthropic.NotFoundError):
        stranger.messages.batches.delete(made.id)

    gone = claude.messages.batches.delete(made.id)
    assert (gone.id, gone.type) == (made.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(made.id)
    assert rows(Batch, made.id) == 0 and rows(BatchItem, made.id) == 0
    with get_sessionmaker()() as s:  # its stored body went with it; its jobs stay
        kept = (
            select(func.count())
            .select_from(File)
            .where(File.tenant_id == _tenant(api_key), File.filename == "message_batch.json")
        )
        assert s.scalar(kept) == 0
        assert all(s.get(Job, j.id) is not None for j in jobs.values() if j is not None)


# `invalid_request`: the batch's shape; the others are the chat request's own checks,
# made at creation where they need no tokenizer (service/batches/message_params.py).
CODES = ("invalid_request", "invalid_json", "unknown_model", "invalid_messages", "bad_budget",
         "bad_params", "invalid_body")  # fmt: skip


def _refused(client: anthropic.Anthropic, requests: Any) -> str:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=requests)
    body = info.value.body
    assert isinstance(body, dict)
    error: dict[str, Any] = body["error"]
    assert error["code"] in CODES, error
    # The shape both SDKs read: `param` the field at fault, `message` what is wrong.
    assert (error["param"], error["message"]) == (error["field"], error["reason"]), error
    assert error["reason"] in str(info.value)
    return f"{error['field']}: {error['reason']}"


@pytest.mark.parametrize(
    ("requests", "named"),
    [
        ([request("a"), request("b"), request("a")], "requests[2].custom_id"),
        ([request("has space")], "requests[0].custom_id"),
        ([request("x" * 65)], "requests[0].custom_id"),
        ([{"custom_id": "a", "params": {"model": "auto", "messages": []}}], "max_tokens"),
        ([request("a", max_tokens=0)], "max_tokens"),
        ([request("a", model="")], "params.model"),
        ([request("a", tools=[{"name": "t"}])], "tools"),
        ([request("a", messages=[{"role": "system", "content": "x"}])], "messages[0]"),
        ([request("a", messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "data": "AA=="}}]}])], "image"),
        ([request("ok"), "not an object"], "requests[1]"),
        ([{"custom_id": "a", "params": {}, "extra": 1}], "extra"),
        ([], "non-empty"),
        # What the request's chat job would be refused, known before anything runs:
        # no backend is configured here, so no role or model is served ("auto" is
        # left to routing), and text with NUL can be neither counted nor stored.
        ([request("ok"), request("a", model="gemma")],
         "body.requests[1].params.model: requests[1].params.model: no backend serves "
         "model 'gemma'; name one of ['auto']"),
        ([request("a", "nul \x00 here")],
         "body.requests[0].params.messages[0].content: requests[0].params.messages[0]"
         ".content: must not contain NUL"),
        ([request("a", messages=[{"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": [
                                     {"type": "text", "text": "ok"},
                                     {"type": "text", "text": "\x00"}]}])],
         "body.requests[0].params.messages[1].content[1].text: "),
        ([request("a", system="\x00")], "body.requests[0].params.system: "),
        ([request("a", system=[{"type": "text", "text": "a"}, {"type": "text", "text": "\x00"}])],
         "body.requests[0].params.system[1].text: "),
        ([request("a", "   ")], "body.requests[0].params.messages: "),
        ([request("a", max_tokens=10**9)], "body.requests[0].params.max_tokens: "),
        ([request("a", stop_sequences=["a", "b", "c", "d", "e"])],
         "body.requests[0].params.stop_sequences: "),
        ([request("a", temperature=5)], "body.requests[0].params.temperature: "),
    ],
)  # fmt: skip
def test_a_bad_request_refuses_the_whole_batch_naming_it(
    claude: anthropic.Anthropic, api_key: str, requests: Any, named: str
) -> None:
    before = rows_of_tenant(api_key)
    assert named in _refused(claude, requests)
    assert rows_of_tenant(api_key) == before  # neither a batch nor its body kept


def test_an_unknown_field_beside_the_requests_is_refused_naming_it(
    claude: anthropic.Anthropic, api_key: str
) -> None:
    before = rows_of_tenant(api_key)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.batches.create(requests=[request("a")], extra_body={"priorty": "high"})
    error = info.value.body["error"]  # type: ignore[index]
    assert error["param"] == "body.priorty" and "unknown field 'priorty'" in error["message"]
    assert rows_of_tenant(api_key) == before


def test_a_model_is_refused_at_creation_only_when_no_configured_backend_serves_it(
    claude: anthropic.Anthropic,
) -> None:
    config = BackendConfig(role="gemma", url="http://127.0.0.1:9")
    tag = uuid.uuid4().hex[:8]
    with api_settings(get_settings().model_copy(update={"backends": [config]})):
        # Never probed: the server's model is not known, so any name may be it and
        # only its job's planning can tell.
        claude.messages.batches.create(requests=[request(f"unprobed-{tag}", model="x/y")])
        with get_sessionmaker()() as s:
            row = Backend(role="gemma", url=normalize_url(config.url), model="served/model")
            s.add(row)
            s.commit()
        try:
            for model in ("gemma", "served/model", "auto"):  # a role, the served name
                asked = [request(f"{tag}-{model.replace('/', '-')}", model=model)]
                made = claude.messages.batches.create(requests=asked)  # type: ignore[arg-type]
                assert made.processing_status == "in_progress"
            why = _refused(claude, [request(f"other-{tag}", model="other/model")])
            assert why.startswith("body.requests[0].params.model: "), why
            assert "name one of ['auto', 'gemma', 'served/model']" in why
        finally:
            with get_sessionmaker()() as s:
                s.execute(delete(Backend).where(Backend.id == row.id))
                s.commit()


def rows_of_tenant(key: str) -> tuple[int, int]:
    tenant = _tenant(key)
    with get_sessionmaker()() as s:
        batches = s.scalar(select(func.count()).select_from(Batch).where(Batch.tenant_id == tenant))
        files = s.scalar(select(func.count()).select_from(File).where(File.tenant_id == tenant))
    return batches or 0, files or 0


@pytest.mark.parametrize(
    "body",
    [b"", b"{not json", b"[1, 2]", b'{"requests": {"a": 1}}', b'{"requests": [', b"\xff\xfe",
     b'{"requests": [{"custom_id": "a", "params": {"model": "auto\xed\xa0\x80"}}]}'],
)  # fmt: skip
def test_a_body_that_is_not_a_message_batch_is_400(base: str, api_key: str, body: bytes) -> None:
    headers = {"x-api-key": api_key, "content-type": "application/json"}
    resp = httpx.post(f"{base}/v1/messages/batches", headers=headers, content=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] in ("invalid_json", "invalid_request")


def test_too_many_requests_or_bytes_are_refused_with_the_limit(
    claude: anthropic.Anthropic, base: str, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "batch_max_requests", 2)
    assert "more than 2 requests" in _refused(claude, [request("a"), request("b"), request("c")])
    monkeypatch.setattr(get_settings(), "max_batch_file_bytes", 1000)
    body = json.dumps({"requests": [request("a", "x" * 2000)]}).encode()
    for streamed in (False, True):  # with a Content-Length, and chunked without one
        content: Any = iter([body[:500], body[500:]]) if streamed else body
        headers = {"x-api-key": api_key, "content-type": "application/json"}
        resp = httpx.post(f"{base}/v1/messages/batches", headers=headers, content=content)
        assert resp.status_code == 413, resp.text
        assert "1000 bytes" in resp.json()["error"]["reason"]


def test_a_batch_that_has_not_ended_cannot_be_deleted_and_other_kinds_are_not_found(
    claude: anthropic.Anthropic, api_key: str
) -> None:
    tenant = _tenant(api_key)
    with get_sessionmaker()() as s:
        running = Batch(tenant_id=tenant, kind="anthropic", status=BatchStatus.in_progress)
        openai_one = Batch(tenant_id=tenant, kind="openai", status=BatchStatus.completed)
        s.add_all([running, openai_one])
        s.commit()
        running_id, other_id = lifecycle.public_id(running.id), lifecycle.public_id(openai_one.id)
    with pytest.raises(anthropic.ConflictError) as info:
        claude.messages.batches.delete(running_id)
    assert "cancel it" in str(info.value)
    assert claude.messages.batches.retrieve(running_id).processing_status == "in_progress"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.batches.retrieve(other_id)
    assert other_id not in [b.id for b in claude.messages.batches.list(limit=1000).data]
    with get_sessionmaker()() as s:  # leave nothing running for the advancer
        s.execute(update(Batch).where(Batch.id == running.id).values(status=BatchStatus.cancelled))
        s.commit()


def test_list_pages_both_ways(claude: anthropic.Anthropic, api_key: str) -> None:
    tenant = _tenant(api_key)
    with get_sessionmaker()() as s:
        made = [Batch(tenant_id=tenant, kind="anthropic", status=BatchStatus.completed)
                for _ in range(3)]  # fmt: skip
        s.add_all(made)
        s.commit()
    ids = [b.id for b in claude.messages.batches.list(limit=1000).data]
    first = claude.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[:2] and first.has_more
    assert first.first_id == ids[0] and first.last_id == ids[1]
    second = claude.messages.batches.list(limit=2, after_id=ids[1])
    assert [b.id for b in second.data] == ids[2:4]
    back = claude.messages.batches.list(limit=2, before_id=ids[2])
    assert [b.id for b in back.data] == ids[:2]
    # The SDK's own paging walks every one, once.
    assert [b.id for b in claude.messages.batches.list(limit=2)] == ids
