"""Request-file batches of `/v1/chat/completions` lines, driven by the official
`openai` SDK against a real uvicorn server and a real Celery worker, without vLLM.

The worker is told of two backends that never answer (a gemma of 4,096 tokens and a
scout of 16,384, as a refresher would have measured them): a chat line is planned on
them, so the lines that can run are routed and wait for KV room, and the rest fail
with their reasons: bad messages, a model no backend serves, `stream: true`, a field
not served, a request too long for every backend (never split)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from sqlalchemy import delete, select

from service.batches import lifecycle
from service.db import get_sessionmaker
from service.models import Backend, BatchItem, Job, JobStatus
from tests.api.test_request_batches import content_lines, create, line, settled, upload
from tests.conftest import _new_key, start_worker, stop_worker, wait_for

CHAT = "/v1/chat/completions"
GEMMA = "google/gemma-4-31B-it"
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"


@pytest.fixture(scope="module")
def api_key(database: str) -> str:
    return _new_key(f"chat-batches-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def chat_worker(
    tmp_path_factory: pytest.TempPathFactory, database: str, broker: Any
) -> Iterator[subprocess.Popen[bytes]]:
    tag = uuid.uuid4().hex[:8]
    rows = [
        Backend(
            role=role,
            url=f"http://127.0.0.1:9/chat-{tag}/{role}",
            model=model,
            max_model_len=length,
            block_size=16,
            kv_capacity_bytes=20 << 30,
            capacity_source="measured",
            healthy=True,
        )
        for role, model, length in (("gemma", GEMMA, 4096), ("scout", SCOUT, 16_384))
    ]
    configs = [{"role": r.role, "url": r.url, "model": r.model} for r in rows]
    with get_sessionmaker()() as s:
        s.add_all(rows)
        s.commit()
        ids = [r.id for r in rows]
    env = {"LONGDOC_BACKENDS": json.dumps(configs), "LONGDOC_BATCH_ADVANCE_INTERVAL_S": "1"}
    proc = start_worker(tmp_path_factory.mktemp("chat-worker") / "worker.log", env=env)
    try:
        yield proc
    finally:
        stop_worker(proc)
        with get_sessionmaker()() as s:
            s.execute(delete(Backend).where(Backend.id.in_(ids)))
            s.commit()


def chat(model: str = "auto", content: Any = "Say hi.", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def test_chat_lines_are_routed_or_fail_each_with_its_reason(
    chat_worker: Any, ours: openai.OpenAI
) -> None:
    parts = [{"type": "text", "text": "Say"}, {"type": "text", "text": "hi."}]
    lines = [
        line("auto", chat(max_tokens=8), url=CHAT),
        line("scout", chat("scout", max_completion_tokens=8, temperature=0.2), url=CHAT),
        line("served", chat(GEMMA, content=parts, max_tokens=8, stop=["\n"]), url=CHAT),
        line("unknown-model", chat("gpt-4o"), url=CHAT),
        line("bad-role", {"model": "auto", "messages": [{"role": "tool", "content": "x"}]}, CHAT),
        line("stream", chat(stream=True), url=CHAT),
        line("tools", chat(tools=[]), url=CHAT),
        line("too-long", chat(content="word " * 40_000, max_tokens=8), url=CHAT),
    ]
    made = create(ours, upload(ours, lines), endpoint=CHAT)
    assert made.endpoint == CHAT

    def failed_written() -> Any:
        got = ours.batches.retrieve(made.id)
        counts = got.request_counts
        written = got.error_file_id and len(content_lines(ours, got.error_file_id)) == 5
        return got if counts and counts.failed == 5 and written else None

    running = wait_for(failed_written, what="the five failed lines written")
    assert running.status == "in_progress" and running.output_file_id is None
    errors = {e["custom_id"]: e["error"] for e in content_lines(ours, running.error_file_id)}
    assert errors["unknown-model"]["code"] == "unknown_model"
    assert "'gpt-4o'" in errors["unknown-model"]["message"]
    assert "gemma" in errors["unknown-model"]["message"]
    assert errors["bad-role"]["code"] == "invalid_messages"
    assert errors["bad-role"]["message"].startswith("body.messages[0].role: ")
    assert errors["stream"]["code"] == "invalid_body"
    assert "body.stream" in errors["stream"]["message"]
    assert "stream must be false" in errors["stream"]["message"]
    assert (errors["tools"]["code"], errors["tools"]["message"][:10]) == (
        "invalid_body", "body.tools"
    )  # fmt: skip
    assert errors["too-long"]["code"] == "too_long"
    assert "never split" in errors["too-long"]["message"]
    assert "16,384" in errors["too-long"]["message"]  # scout's context, among the rejected
    with get_sessionmaker()() as s:
        stmt = select(BatchItem.custom_id, Job).join(Job, Job.id == BatchItem.job_id)
        stmt = stmt.where(BatchItem.batch_id == lifecycle.parse_id(made.id))
        jobs = {cid: job for cid, job in s.execute(stmt).all()}
    assert set(jobs) == {"auto", "scout", "served", "too-long"}
    assert jobs["too-long"].status == JobStatus.failed and jobs["too-long"].plan is None
    routed = {cid: jobs[cid] for cid in ("auto", "scout", "served")}
    for cid, job in routed.items():
        assert (job.task, job.document_id, job.status) == (
            "chat", None, JobStatus.waiting_for_capacity
        ), cid  # fmt: skip
        assert job.plan is not None and job.plan.kind == "single" and job.plan.request
        assert job.max_output_tokens == 8 and job.kv_bytes == job.plan.request.kv_bytes
    assert {cid: j.role for cid, j in routed.items()} == {
        "auto": "gemma", "scout": "scout", "served": "gemma"
    }  # fmt: skip
    assert [d.role for d in routed["scout"].plan.document] == ["scout"]  # type: ignore[union-attr]
    assert routed["served"].params == {
        "model": GEMMA, "messages": [{"role": "user", "content": parts}], "stop": ["\n"]
    }  # fmt: skip
    assert routed["scout"].params["temperature"] == 0.2
    # The same bytes again: the same batch, no second job.
    assert create(ours, upload(ours, lines), endpoint=CHAT).id == made.id
    ours.batches.cancel(made.id)
    done = settled(ours, made.id, "cancelled")
    counts = done.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (8, 0, 5)


def test_a_line_for_another_url_fails_a_chat_batch_at_validation(
    chat_worker: Any, ours: openai.OpenAI
) -> None:
    lines = [line("a", chat(), url=CHAT), line("b", {"document_id": str(uuid.uuid4())})]
    made = create(ours, upload(ours, lines), endpoint=CHAT)
    failed = settled(ours, made.id, "failed", "completed")
    assert failed.status == "failed" and failed.errors is not None and failed.errors.data
    first = failed.errors.data[0]
    assert (first.code, first.line) == ("mismatched_url", 2)
    with get_sessionmaker()() as s:
        stmt = select(Job.id).where(Job.batch_id == lifecycle.parse_id(made.id))
        assert s.scalars(stmt).first() is None


def test_lines_that_open_alike_share_a_prefix_key(chat_worker: Any, ours: openai.OpenAI) -> None:
    """Every message but the last, at least CHAT_PREFIX_AFFINITY_MIN_CHARS (2,048) long
    and the same: one key, whatever the question; a short, absent or other opening,
    none or another."""
    context = f"Clause {uuid.uuid4()}: the tenant pays rent on the first of the month. " * 40
    assert 2_048 < len(context) < 4_000

    def opened(system: str, question: str) -> dict[str, Any]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return {"model": "auto", "messages": messages, "max_tokens": 8}

    lines = [
        line("due", opened(context, "When is rent due?"), url=CHAT),
        line("who", opened(context, "Who pays the rent?"), url=CHAT),
        line("other", opened(context.replace("first", "last"), "When is rent due?"), url=CHAT),
        line("short", opened("Answer briefly.", "When is rent due?"), url=CHAT),
        line("alone", chat(content=context, max_tokens=8), url=CHAT),
    ]
    made = create(ours, upload(ours, lines), endpoint=CHAT)
    batch_id = lifecycle.parse_id(made.id)

    def keys() -> dict[str, str | None] | None:
        with get_sessionmaker()() as s:
            stmt = select(BatchItem.custom_id, Job.prefix_key, Job.status)
            stmt = stmt.join(Job, Job.id == BatchItem.job_id).where(BatchItem.batch_id == batch_id)
            got = s.execute(stmt).all()
        if len(got) < len(lines):
            return None
        assert {status for _, _, status in got} == {JobStatus.waiting_for_capacity}
        return {cid: key for cid, key, _ in got}

    got = wait_for(keys, what="the five chat jobs")
    assert got["due"] is not None and got["due"] == got["who"]
    assert got["other"] is not None and got["other"] != got["due"]
    assert (got["short"], got["alone"]) == (None, None)
    ours.batches.cancel(made.id)
    settled(ours, made.id, "cancelled")
