"""Chat prefix keys (`ingestion.capacity.prefix`, `service.jobs.chat.chat_prefix_key`):
requests that open with the same long messages share one key, whatever their last
message; a short, absent or different opening gets none or another."""

from __future__ import annotations

from typing import Any

from ingestion.capacity.prefix import prefix_key
from service.batches.message_params import to_chat
from service.config import Settings
from service.jobs.chat import ChatRequest, chat_params, chat_prefix_key

MIN = 100
CONTEXT = "The contract says the tenant pays on the first of each month. " * 4


def _key(messages: list[dict[str, Any]], settings: Settings | None = None) -> str | None:
    settings = settings or Settings(chat_prefix_affinity_min_chars=MIN)
    texts = chat_params(ChatRequest(model="auto", messages=messages), settings)[1]
    return chat_prefix_key(messages, texts, settings)


def _chat(question: str, context: Any = CONTEXT) -> list[dict[str, Any]]:
    return [{"role": "system", "content": context}, {"role": "user", "content": question}]


def test_the_same_long_opening_is_one_key_whatever_the_last_message() -> None:
    first, second = _key(_chat("When is rent due?")), _key(_chat("Who pays?"))
    assert first is not None and len(first) == 64
    assert first == second
    # Longer conversations too: everything before the last message is the opening.
    turns = [*_chat("When is rent due?"), {"role": "assistant", "content": "On the 1st."}]
    assert _key([*turns, {"role": "user", "content": "And late fees?"}]) == _key(
        [*turns, {"role": "user", "content": "Who decides?"}]
    )
    assert _key([*turns, {"role": "user", "content": "x"}]) != first


def test_text_parts_key_as_the_text_they_are_counted_as() -> None:
    half = len(CONTEXT) // 2
    parts = [{"type": "text", "text": CONTEXT[:half]}, {"type": "text", "text": CONTEXT[half:]}]
    joined = CONTEXT[:half] + "\n" + CONTEXT[half:]
    assert _key(_chat("Q?", parts)) == _key(_chat("Q?", joined)) is not None
    assert _key(_chat("Q?", parts)) != _key(_chat("Q?"))


def test_a_short_or_missing_opening_has_no_key() -> None:
    assert _key(_chat("Q?", "Be brief.")) is None
    assert _key([{"role": "user", "content": CONTEXT}]) is None  # nothing before the last
    # The default threshold: 2,048 characters of opening.
    assert _key(_chat("Q?"), Settings()) is None
    assert _key(_chat("Q?", "x" * 2_048), Settings()) is not None


def test_the_threshold_counts_the_openings_characters() -> None:
    exactly = [("system", "a" * 60), ("user", "b" * 40), ("user", "last")]
    assert prefix_key(exactly, 100) is not None
    assert prefix_key(exactly, 101) is None


def test_a_different_opening_is_another_key() -> None:
    base = _key(_chat("Q?"))
    assert _key(_chat("Q?", CONTEXT + ".")) != base
    as_user = [{"role": "user", "content": CONTEXT}, {"role": "user", "content": "Q?"}]
    assert _key(as_user) != base  # the role is part of what the template sees
    # Where one message ends and the next begins matters too.
    split = [("user", "a" * 60), ("user", "b" * 60), ("user", "q")]
    moved = [("user", "a" * 61), ("user", "b" * 59), ("user", "q")]
    assert prefix_key(split, MIN) != prefix_key(moved, MIN)


def test_an_anthropic_request_keys_as_the_chat_request_it_becomes() -> None:
    blocks = [{"type": "text", "text": CONTEXT, "cache_control": {"type": "ephemeral"}}]
    for system in (CONTEXT, blocks):
        params = {"model": "auto", "max_tokens": 8, "system": system}
        params["messages"] = [{"role": "user", "content": "When is rent due?"}]
        body = to_chat(0, params)
        assert _key(body["messages"]) == _key(_chat("Who pays?")) is not None
