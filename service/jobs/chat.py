"""Chat requests: an OpenAI `/v1/chat/completions` body (a line of a request-file
batch) run as a job of its own, `task` "chat", on no document.

The messages are the prompt, sent as given. They are counted with each candidate
role's own tokenizer (`planner.plan_chat`), routed by that length to the smallest
backend that holds them (or to the one `model` names) and admitted by their KV
footprint like every job; a request too long for every backend fails (`too_long`),
it is never split. Requests that open with the same long messages carry one prefix
key (`chat_prefix_key`), and admission keeps them on one replica, whose prefix cache
holds that opening. The result is the assistant's message, shown in batch output as
OpenAI's `chat.completion` object (`completion`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from ingestion.capacity.prefix import prefix_key
from ingestion.tasks.schema import json_type
from ingestion.tasks.specs import CHAT_TASK, bad_char
from service.config import Settings
from service.errors import Invalid
from service.jobs import creation, lifecycle, planning, quota
from service.jobs.results import ResultOut
from service.models import Job, utcnow

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_TOKENS = 1024  # a job's default budget, as `JobCreate`'s
MAX_STOP = 4  # OpenAI's limit
STOP_CHARS = 1_000
# vLLM's own, and "repetition" (Longdoc's loop guard cut the output short): OpenAI's
# clients know "stop" and "length" only, and a cut output is one that was not finished.
_FINISH = {"stop": "stop", "length": "length"}


class ChatRequest(BaseModel):
    """The fields of OpenAI's chat request that Longdoc serves; any other field is
    refused (a client relying on `tools` or `response_format` must not get an answer
    made without them). `user`, `metadata` and `store` are taken and ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        min_length=1,
        max_length=300,
        description='"auto" (routed by length), a role ("gemma", "scout"), or a model a '
        "backend serves",
    )
    messages: list[Any] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError("n must be 1: Longdoc answers a chat request with one choice")
        return n

    @field_validator("stream")
    @classmethod
    def _not_streamed(cls, stream: bool | None) -> bool | None:
        if stream:
            raise ValueError("stream must be false: a batch's answers are lines of its file")
        return stream


def _bad(code: str, where: str, why: str) -> Invalid:
    # A batch line's failed item keeps the reason only: it names the field itself.
    return Invalid(code, f"{where}: {why}", field=where)


def _text(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise _bad("invalid_messages", where, f"must be a string, not {json_type(value)}")
    bad = bad_char(value, one_line=False)
    if bad is not None:
        raise _bad("invalid_messages", where, bad)
    return value


def _content(where: str, content: object) -> str:
    """The message's text: a string, or a list of text parts (counted as vLLM joins
    them for a template that takes a string: one line apart)."""
    if not isinstance(content, list):
        return _text(where, content)
    if not content:
        raise _bad("invalid_messages", where, "must not be an empty list")
    texts = []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else json_type(part)
            why = f"only text parts are served, not {kind!r}"
            raise _bad("invalid_messages", at, why)
        if set(part) != {"type", "text"}:
            why = f"a text part holds type and text only, not {sorted(set(part) - {'type'})}"
            raise _bad("invalid_messages", at, why)
        texts.append(_text(f"{at}.text", part["text"]))
    return "\n".join(texts)


def message_texts(messages: Sequence[Any]) -> list[str]:
    """Each message's text, checked: roles system, user or assistant, content a string
    or text parts. Invalid names the message at fault."""
    out = []
    for i, message in enumerate(messages):
        where = f"body.messages[{i}]"
        if not isinstance(message, dict):
            raise _bad("invalid_messages", where, "a message must be an object")
        if set(message) != {"role", "content"}:
            why = f"a message holds role and content, not {sorted(message)}"
            raise _bad("invalid_messages", where, why)
        role = message["role"]
        if role not in ROLES:
            why = f"role must be one of {list(ROLES)}, not {str(role)[:50]!r}"
            raise _bad("invalid_messages", f"{where}.role", why)
        out.append(_content(f"{where}.content", message["content"]))
    return out


def _budget(req: ChatRequest, settings: Settings) -> int:
    given = {req.max_tokens, req.max_completion_tokens} - {None}
    if len(given) > 1:
        why = "max_tokens and max_completion_tokens differ: give one"
        raise _bad("bad_budget", "body.max_completion_tokens", why)
    budget = given.pop() if given else DEFAULT_MAX_TOKENS
    assert budget is not None
    if budget > (most := settings.max_output_tokens):
        why = f"{budget:,} output tokens is above this service's limit of {most:,}"
        raise _bad("bad_budget", "body.max_tokens", why)
    return budget


def _stop(stop: str | list[str] | None) -> list[str] | None:
    stops = [stop] if isinstance(stop, str) else stop
    if stops is None:
        return None
    if len(stops) > MAX_STOP:
        raise _bad("bad_params", "body.stop", f"at most {MAX_STOP} stop sequences")
    for s in stops:
        if not s or len(s) > STOP_CHARS:
            why = f"a stop sequence has 1 to {STOP_CHARS:,} characters"
            raise _bad("bad_params", "body.stop", why)
        _text("body.stop", s)
    return stops


def chat_params(req: ChatRequest, settings: Settings) -> tuple[dict[str, Any], list[str], int]:
    """(the job's params: model, messages as given and the sampling asked for; each
    message's text; the output budget). Invalid for what cannot be served."""
    if len(req.messages) > settings.chat_max_messages:
        why = f"{len(req.messages):,} messages; the limit is {settings.chat_max_messages:,}"
        raise _bad("invalid_messages", "body.messages", why)
    texts = message_texts(req.messages)
    chars = sum(len(t) for t in texts)
    if chars > settings.chat_max_chars:
        why = f"the messages hold {chars:,} characters; the limit is {settings.chat_max_chars:,}"
        raise _bad("invalid_messages", "body.messages", why)
    if not any(t.strip() for t in texts):
        raise _bad("invalid_messages", "body.messages", "the messages hold no text")
    sampling: dict[str, Any] = {"temperature": req.temperature, "top_p": req.top_p}
    sampling |= {"seed": req.seed, "stop": _stop(req.stop)}
    params: dict[str, Any] = {"model": req.model, "messages": req.messages}
    params |= {k: v for k, v in sampling.items() if v is not None}
    return params, texts, _budget(req, settings)


def chat_prefix_key(
    messages: Sequence[Any], texts: Sequence[str], settings: Settings
) -> str | None:
    """The job's prefix key (`ingestion.capacity.prefix`): its messages but the last,
    each its role and its text as counted (`message_texts`), when they are long enough."""
    roles = [str(m["role"]) for m in messages]
    shared = list(zip(roles, texts, strict=True))
    return prefix_key(shared, settings.chat_prefix_affinity_min_chars)


def create_chat(
    session: Session,
    settings: Settings,
    tenant_id: uuid.UUID,
    req: ChatRequest,
    *,
    batch_id: uuid.UUID | None = None,
    idempotency_key: str | None = None,
) -> tuple[Job, bool, list[uuid.UUID]]:
    """(job, created, jobs whose tasks to send), as `lifecycle.create`: planned at once
    (it has no document to wait for), or failed with the router's reason. Invalid for
    a request that cannot be served (bad messages, a model no backend serves)."""
    params, texts, budget = chat_params(req, settings)
    asked = creation.Asked(None, CHAT_TASK, params, budget)
    key, found = creation.existing(session, tenant_id, asked, idempotency_key)
    if found is not None:
        return found, False, []
    rows = planning.chat_backend_rows(session, settings, req.model)
    if batch_id is None:
        quota.check_room(session, settings, tenant_id)  # cheap refusal before planning
    now = utcnow()
    prefix = chat_prefix_key(req.messages, texts, settings)
    job = creation.new_job(tenant_id, asked, key, now, batch_id, prefix_key=prefix)

    def start() -> list[uuid.UUID]:
        try:
            started = lifecycle.start_planned(
                session,
                settings,
                job,
                now,
                lambda: planning.plan_chat_job(settings, rows, texts, budget),
            )
        except ValueError as exc:
            session.rollback()
            raise _bad("bad_budget", "body.max_tokens", str(exc)) from None
        assert started is not None, "a job of this transaction is nobody else's"
        return started

    return creation.insert(session, settings, job, asked, start)


def completion(job: Job, result: ResultOut) -> dict[str, Any]:
    """The job's result as OpenAI's `chat.completion` object."""
    prompt, done = result.prompt_tokens or 0, result.completion_tokens or 0
    finish = (result.data or {}).get("finish_reason")
    message = {"role": "assistant", "content": result.text or "", "refusal": None}
    return {
        "id": f"chatcmpl-{job.id.hex}",
        "object": "chat.completion",
        "created": int(result.created_at.timestamp()),
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _FINISH.get(str(finish), "length"),
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
        },
    }
