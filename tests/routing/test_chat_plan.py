"""Chat requests planned and checked without a server: counted with the real Gemma 4
and Llama 4 tokenizers, routed on the paper deployment and on a small one, never
split; and the request checks that fail a batch line with a reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ingestion.capacity.route_plan import RouteRefused
from ingestion.capacity.router import Backend
from ingestion.tasks.specs import CHAT_MESSAGE_TOKENS, TEMPLATE_TOKENS
from ingestion.tokens.counting import TokenCounter
from service.config import Settings
from service.errors import Invalid
from service.jobs.chat import ChatRequest, chat_params
from service.jobs.planner import plan_chat

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Answer in one short sentence."},
    {"role": "user", "content": [{"type": "text", "text": "What is a KV cache?"}]},
]


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    return chat_params(ChatRequest(model="auto", messages=messages), Settings())[1]


def test_a_short_chat_goes_to_gemma_counted_by_each_tokenizer(
    paper: list[Backend], gemma: TokenCounter, scout: TokenCounter
) -> None:
    texts = _texts(MESSAGES)
    assert texts == ["Answer in one short sentence.", "What is a KV cache?"]
    counters = {"gemma": gemma, "scout": scout}
    planned = plan_chat(texts, 64, paper, counters, Settings())
    plan = planned.plan
    assert plan.kind == "single" and plan.request is not None
    assert plan.request.role == "gemma" and not plan.map
    overhead = TEMPLATE_TOKENS + CHAT_MESSAGE_TOKENS * 2
    for doc in plan.document:
        counter = counters[doc.role]
        assert doc.exact and doc.count == sum(counter.count(t) for t in texts)
    assert dict(plan.prompt_tokens) == {"gemma": overhead, "scout": overhead}
    gemma_count = next(d.count for d in plan.document if d.role == "gemma")
    assert plan.request.input_tokens == gemma_count + overhead
    assert plan.request.output_tokens == 64
    # Only scout's replicas (the request named that role): it runs there.
    only_scout = [b for b in paper if b.role == "scout"]
    planned = plan_chat(texts, 64, only_scout, counters, Settings())
    assert planned.plan.request is not None and planned.plan.request.role == "scout"
    assert [d.role for d in planned.plan.document] == ["scout"]


def test_a_chat_too_long_for_every_backend_is_refused_not_split(gemma: TokenCounter) -> None:
    small = [Backend("g", "gemma", "google/gemma-4-31B-it", 4096, 20 << 30)]
    texts = ["word " * 5000]
    with pytest.raises(RouteRefused) as caught:
        plan_chat(texts, 128, small, {"gemma": gemma}, Settings())
    assert caught.value.code == "too_long"
    assert "never split" in caught.value.reason and "by gemma's count" in caught.value.reason
    assert caught.value.rejected and "4,096" in caught.value.rejected[0].reason


def _refused(body: dict[str, Any], settings: Settings | None = None) -> Invalid:
    with pytest.raises(Invalid) as caught:
        chat_params(ChatRequest.model_validate(body), settings or Settings())
    return caught.value


@pytest.mark.parametrize(
    ("messages", "code", "field"),
    [
        ([{"role": "tool", "content": "x"}], "invalid_messages", "body.messages[0].role"),
        ([{"role": "user"}], "invalid_messages", "body.messages[0]"),
        ([{"role": "user", "content": "x", "name": "n"}], "invalid_messages", "body.messages[0]"),
        ([{"role": "user", "content": 5}], "invalid_messages", "body.messages[0].content"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "invalid_messages",
            "body.messages[0].content[0]",
        ),
        ([{"role": "user", "content": "a\x00b"}], "invalid_messages", "body.messages[0].content"),
        ([{"role": "user", "content": "  "}], "invalid_messages", "body.messages"),
        (["hello"], "invalid_messages", "body.messages[0]"),
    ],
)
def test_bad_messages_are_refused_naming_the_message(
    messages: list[Any], code: str, field: str
) -> None:
    err = _refused({"model": "auto", "messages": messages})
    assert (err.code, err.field) == (code, field)
    assert err.reason.startswith(field + ": ")


def test_limits_budget_and_stop() -> None:
    many = [{"role": "user", "content": "x"}] * 3
    err = _refused({"model": "auto", "messages": many}, Settings(chat_max_messages=2))
    assert "3 messages; the limit is 2" in err.reason
    err = _refused({"model": "auto", "messages": many}, Settings(chat_max_chars=2))
    assert "3 characters; the limit is 2" in err.reason
    one = [{"role": "user", "content": "x"}]
    err = _refused({"model": "auto", "messages": one, "max_tokens": 5, "max_completion_tokens": 6})
    assert err.code == "bad_budget"
    err = _refused({"model": "auto", "messages": one, "max_tokens": 10**9})
    assert err.code == "bad_budget" and "limit" in err.reason
    err = _refused({"model": "auto", "messages": one, "stop": ["a", "b", "c", "d", "e"]})
    assert (err.code, err.field) == ("bad_params", "body.stop")
    params, _, budget = chat_params(
        ChatRequest.model_validate(
            {"model": "gemma", "messages": one, "max_completion_tokens": 9, "stop": "END",
             "temperature": 0.5, "user": "ignored", "n": 1, "stream": False}
        ),
        Settings(),
    )  # fmt: skip
    assert budget == 9
    assert params == {
        "model": "gemma", "messages": one, "temperature": 0.5, "stop": ["END"]
    }  # fmt: skip
    assert chat_params(ChatRequest(model="auto", messages=one), Settings())[2] == 1024


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ({"stream": True}, "stream"),
        ({"n": 2}, "n"),
        ({"tools": []}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_what_a_chat_request_cannot_have(extra: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatRequest.model_validate({"model": "auto", "messages": MESSAGES, **extra})
    assert caught.value.errors()[0]["loc"] == (where,)
