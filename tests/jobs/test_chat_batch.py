"""A `/v1/chat/completions` request-file batch on the real two-role deployment
(tests/jobs/conftest.py), through the official `openai` SDK: each line counted,
routed (by length, or to the model it names), admitted and run on a real vLLM CPU
server, and its output line OpenAI's `chat.completion`, with the usage the job's
result recorded; and an Anthropic Message Batch the same way, through the official
`anthropic` SDK. Short messages and 8 output tokens: the CPU is slow."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest
from openai.types.chat import ChatCompletion
from sqlalchemy import select

from service.batches import lifecycle
from service.db import get_sessionmaker
from service.models import BatchItem, Job, Result
from tests.api.conftest import base, live_server, sdk  # noqa: F401 - fixtures used here
from tests.api.test_request_batches import content_lines, create, line, upload
from tests.conftest import wait_for
from tests.jobs.conftest import GEMMA_ID, SCOUT_ID, Deployment

pytestmark = pytest.mark.usefixtures("job_worker")
CHAT = "/v1/chat/completions"


def _user(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 8, **extra}


def test_a_chat_batch_runs_each_line_on_its_routed_model(
    base: str,  # noqa: F811 - the fixture imported above
    api_key: str,
    deployment: Deployment,
) -> None:
    system = {"role": "system", "content": "Answer in a few words."}
    scout = _user("Name a colour.", model=SCOUT_ID, temperature=0)
    scout["messages"].insert(0, system)
    lines = [
        line("short", _user("Say hello.", model="auto"), url=CHAT),
        line("named", scout, url=CHAT),
    ]
    with sdk(base, api_key) as client:
        made = create(client, upload(client, lines), endpoint=CHAT)

        def completed() -> Any:
            got = client.batches.retrieve(made.id)
            return got if got.status in ("completed", "failed", "cancelled", "expired") else None

        done = wait_for(completed, timeout=300, interval=0.5, what=f"batch {made.id} to end")
        assert done.status == "completed", done
        counts = done.request_counts
        assert counts is not None and (counts.total, counts.completed, counts.failed) == (2, 2, 0)
        assert done.output_file_id is not None and done.error_file_id is None
        out = {e["custom_id"]: e for e in content_lines(client, done.output_file_id)}
    with get_sessionmaker()() as s:
        stmt = select(BatchItem.custom_id, Job, Result).join(Job, Job.id == BatchItem.job_id)
        stmt = stmt.join(Result, Result.job_id == Job.id)
        stmt = stmt.where(BatchItem.batch_id == lifecycle.parse_id(made.id))
        ran = {cid: (job, result) for cid, job, result in s.execute(stmt).all()}
    assert set(out) == set(ran) == {"short", "named"}
    routed = {cid: (job.role, result.model) for cid, (job, result) in ran.items()}
    assert routed == {"short": ("gemma", GEMMA_ID), "named": ("scout", SCOUT_ID)}
    for cid, entry in out.items():
        job, result = ran[cid]
        assert entry["error"] is None and entry["response"]["status_code"] == 200
        assert entry["response"]["request_id"] == result.request_id
        body = entry["response"]["body"]
        completion = ChatCompletion.model_validate(body)  # the SDK's own type
        assert completion.object == "chat.completion" and completion.model == result.model
        assert completion.id == f"chatcmpl-{job.id.hex}"
        (choice,) = completion.choices
        assert choice.message.role == "assistant" and choice.message.content
        assert choice.message.content == result.text and choice.finish_reason in ("stop", "length")
        usage = completion.usage
        assert usage is not None and result.prompt_tokens and result.completion_tokens
        assert (usage.prompt_tokens, usage.completion_tokens) == (
            result.prompt_tokens,
            result.completion_tokens,
        )
        assert usage.total_tokens == result.prompt_tokens + result.completion_tokens
        assert result.completion_tokens <= 8
        # What the plan reserved for holds what the server counted.
        assert job.plan is not None and job.plan.request is not None
        assert result.prompt_tokens <= job.plan.request.input_tokens, json.dumps(body)


def _ran(batch_id: str) -> dict[str, tuple[Job, Result]]:
    with get_sessionmaker()() as s:
        stmt = select(BatchItem.custom_id, Job, Result).join(Job, Job.id == BatchItem.job_id)
        stmt = stmt.join(Result, Result.job_id == Job.id)
        stmt = stmt.where(BatchItem.batch_id == lifecycle.parse_id(batch_id))
        return {cid: (job, result) for cid, job, result in s.execute(stmt).all()}


def test_a_message_batch_runs_on_real_servers_and_reads_back_through_the_sdk(
    base: str,  # noqa: F811 - the fixture imported above
    api_key: str,
    deployment: Deployment,
) -> None:
    hello = [{"role": "user", "content": "Say hello."}]
    requests: Any = [
        {"custom_id": "auto", "params": {"model": "auto", "max_tokens": 8, "messages": hello}},
        {"custom_id": "scout", "params": {
            "model": "scout", "max_tokens": 8, "system": "Answer in a few words.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "A colour?"}]}],
        }},
    ]  # fmt: skip
    with anthropic.Anthropic(api_key=api_key, base_url=base, max_retries=0) as client:
        made = client.messages.batches.create(requests=requests)

        def ended() -> Any:
            got = client.messages.batches.retrieve(made.id)
            return got if got.processing_status == "ended" else None

        done = wait_for(ended, timeout=300, interval=0.5, what=f"message batch {made.id}")
        counts = done.request_counts
        assert (counts.succeeded, counts.errored, counts.processing) == (2, 0, 0), counts
        results = {r.custom_id: r.result for r in client.messages.batches.results(made.id)}
    ran = _ran(made.id)
    assert set(results) == set(ran) == {"auto", "scout"}
    assert {cid: job.role for cid, (job, _) in ran.items()} == {"auto": "gemma", "scout": "scout"}
    for cid, result in results.items():
        stored = ran[cid][1]
        assert result.type == "succeeded", result
        message = result.message
        assert message.role == "assistant" and message.model == stored.model
        (block,) = message.content
        assert block.type == "text" and block.text == stored.text and block.text
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert (message.usage.input_tokens, message.usage.output_tokens) == (
            stored.prompt_tokens,
            stored.completion_tokens,
        )
    # The system prompt went first, as a system message of the chat request.
    scout_job = ran["scout"][0]
    sent = scout_job.params["messages"]
    assert sent[0] == {"role": "system", "content": "Answer in a few words."}, sent
