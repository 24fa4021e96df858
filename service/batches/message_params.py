"""A Message Batch request's `params` (Anthropic's Messages request) as the OpenAI chat
body it runs as (`to_chat`), and the checks of that body that can be made when the
batch is created (`check_servable`): what its chat job would otherwise be refused at
expansion, an `errored` result found only once the batch runs.

Refusals name Anthropic's field (`body.requests[3].params.messages[0].content`), never
the chat body's, with the chat check's own code (`unknown_model`, `invalid_messages`).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from service.config import Settings
from service.errors import BadRequest, Invalid
from service.jobs import chat

_PARAMS = frozenset(
    {"model", "max_tokens", "messages", "system", "temperature", "top_p", "stop_sequences"}
)
# Accepted and not acted on: they change nothing a text-only completion gives back.
_IGNORED = frozenset({"metadata", "top_k", "stream", "service_tier"})
# The chat body's names of Anthropic's params, where they differ (`to_chat`).
_ANTHROPIC_NAME = {"stop": "stop_sequences", "max_completion_tokens": "max_tokens"}
_CHAT_MESSAGE = re.compile(r"body\.messages\[(\d+)\](.*)")


def refuse(
    index: int | None, what: str, field: str = "", code: str = "invalid_request"
) -> BadRequest:
    where = "body.requests" if index is None else f"body.requests[{index}]{field}"
    prefix = "" if index is None else f"requests[{index}]{field}: "
    return BadRequest(code, f"{prefix}{what}", field=where)


def _text_blocks(value: object, index: int, field: str) -> str | list[dict[str, str]]:
    """A content value as a chat message's content: a string, or Anthropic's text
    blocks as OpenAI's text parts (`{type: "text", text}` both; other keys, such as
    `cache_control`, change nothing here and are dropped)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise refuse(index, "must be a string or a non-empty list of content blocks", field)
    parts = []
    for k, block in enumerate(value):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind != "text" or not isinstance(block.get("text"), str):
            why = f"block {k} is of type {kind!r}; only text blocks are served"
            raise refuse(index, why, field)
        parts.append({"type": "text", "text": block["text"]})
    return parts


def _messages(index: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    given = params.get("messages")
    if not isinstance(given, list) or not given:
        raise refuse(index, "messages must be a non-empty list", ".params.messages")
    out: list[dict[str, Any]] = []
    if "system" in params:
        system = _text_blocks(params["system"], index, ".params.system")
        out.append({"role": "system", "content": system})
    for k, m in enumerate(given):
        field = f".params.messages[{k}]"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            role = m.get("role") if isinstance(m, dict) else None
            raise refuse(index, f"role must be user or assistant, not {role!r}", field)
        out.append({"role": m["role"], "content": _text_blocks(m.get("content"), index, field)})
    return out


def to_chat(index: int, params: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI chat body Anthropic's `params` ask for; BadRequest naming the field
    when they are not a request Longdoc serves."""
    unknown = sorted(set(params) - _PARAMS - _IGNORED)
    if unknown:
        raise refuse(index, f"unknown or unserved parameters {unknown}", ".params")
    model, max_tokens = params.get("model"), params.get("max_tokens")
    if not isinstance(model, str) or not model:
        why = "a model is required (a role, a served model or auto)"
        raise refuse(index, why, ".params.model")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise refuse(index, "max_tokens must be a positive integer", ".params.max_tokens")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": _messages(index, params),
    }
    for name in ("temperature", "top_p"):
        if name in params:
            body[name] = params[name]
    if "stop_sequences" in params:
        body["stop"] = params["stop_sequences"]
    return body


def _anthropic_field(chat_field: str, system: bool) -> str:
    """Where in `params` a chat body's field came from: the chat's first message is
    Anthropic's `system` when there is one, so the others are one place further on."""
    found = _CHAT_MESSAGE.fullmatch(chat_field)
    if found is not None:
        k, rest = int(found[1]), found[2]
        if system and k == 0:
            return ".params.system" + rest.removeprefix(".content")
        return f".params.messages[{k - system}]{rest}"
    if not chat_field.startswith("body."):
        return ".params"
    name, dot, rest = chat_field.removeprefix("body.").partition(".")
    return f".params.{_ANTHROPIC_NAME.get(name, name)}{dot}{rest}"


def check_servable(
    index: int,
    params: dict[str, Any],
    body: dict[str, Any],
    settings: Settings,
    served: frozenset[str] | None,
) -> None:
    """BadRequest for what the request's chat job would be refused, where that is known
    without tokenizing: a model no configured backend serves (`served`, from
    `planning.served_models`; None: not known yet, left to planning), and the chat
    request's own checks (characters a tokenizer or the database cannot take, the
    message and character limits, the budget, stop sequences). A prompt too long for
    every backend is found only when its job is counted."""
    model = body["model"]
    if served is not None and model not in served:
        named = ["auto", *sorted(served - {"auto"})]
        why = f"no backend serves model {model!r}; name one of {named}"
        raise refuse(index, why, ".params.model", code="unknown_model")
    try:
        chat.chat_params(chat.ChatRequest.model_validate(body), settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        where = f".params.{_ANTHROPIC_NAME.get(name, name)}" if name else ".params"
        raise refuse(index, first["msg"], where, code="invalid_body") from None
    except Invalid as err:
        chat_field = err.field or ""
        why = err.reason.removeprefix(f"{chat_field}: ")
        where = _anthropic_field(chat_field, "system" in params)
        raise refuse(index, why, where, code=err.code) from None
