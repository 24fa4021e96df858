"""The reading of one streamed chat completion: the server-sent events of vLLM's
`POST /v1/chat/completions` (`data: {chunk}` lines, then `data: [DONE]`) taken line by
line into the text, the usage and the finish reason, with progress reported as tokens
arrive and the stream stopped once the output starts to loop. What makes a finished
stream a `Completion` or a retryable `VllmError` is decided here too; the HTTP request,
its deadlines and its retries are the client's (service.backends.client)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ingestion.tasks.repetition import TAIL_CHARS, Loop, find_loop
from service.backends.completion import Completion, VllmError

_PROGRESS_EVERY_S = 0.5  # on_progress at most ~2/s: callers write it to the database
_LOOP_CHECK_EVERY = 16  # content chunks between looks for a loop (each looks at a tail)


def _loop_at_end(pieces: list[str], chars: int) -> Loop | None:
    """`find_loop` on the output's tail only: joining the whole output at every check
    would copy it over and over. A piece holds at least one character, so the last
    TAIL_CHARS pieces hold all of the tail; `keep_chars` is moved back to the whole."""
    tail = "".join(pieces[-TAIL_CHARS:])
    found = find_loop(tail)
    if found is None:
        return None
    return replace(found, keep_chars=found.keep_chars + chars - len(tail))


class ChatStream:
    """One attempt's stream as it is read: `feed` each line, then `completion`.
    `start` is when the attempt began (its first-token time is measured from it);
    `model` the requested one, until a chunk names the one that answers."""

    def __init__(
        self, base_url: str, model: str, start: float, *, loop_guard: bool,
        on_progress: Callable[[int], None] | None,
    ) -> None:  # fmt: skip
        self.base_url, self.model, self.start = base_url, model, start
        self.loop_guard, self.on_progress = loop_guard, on_progress
        self.text: list[str] = []
        self.usage: dict[str, Any] = {}
        self.finish: str | None = None
        self.first_token_s: float | None = None
        self.tokens, self.reported, self.last_report = 0, 0, 0.0
        self.done = False
        self.loop: Loop | None = None
        self.chars = 0  # of text so far

    def feed(self, line: str) -> bool:
        """Take one line of the stream; True when the stream is over: [DONE], or the
        output loops (leaving the stream closes the connection: vLLM aborts the
        request). VllmError for an error the server reports mid-stream,
        json.JSONDecodeError for a line that is not JSON."""
        if not line.startswith("data:"):
            return False  # blank separators, SSE comments
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return True
        chunk = json.loads(data)
        if "error" in chunk:  # vLLM reports failures mid-stream this way
            err = chunk["error"]
            code = err.get("code") if isinstance(err, dict) else None
            status = code if isinstance(code, int) else None
            retry = status is None or status >= 500
            msg = f"error from {self.base_url} mid-stream: {err}"
            raise VllmError(msg, retryable=retry, status=status)
        if self.first_token_s is None:
            self.first_token_s = time.monotonic() - self.start
        self.model = chunk.get("model") or self.model
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if content := (choice.get("delta") or {}).get("content"):
                self.text.append(content)
                self.tokens += 1
                self.chars += len(content)
                if self.loop_guard and self.tokens % _LOOP_CHECK_EVERY == 0:
                    self.loop = _loop_at_end(self.text, self.chars)
            self.finish = choice.get("finish_reason") or self.finish
        self._progress()
        if self.loop is not None:
            self.done, self.finish = True, "repetition"
            return True
        return False

    def _progress(self) -> None:
        count = self.usage.get("completion_tokens") or self.tokens
        now = time.monotonic()
        due = self.reported == 0 or now - self.last_report >= _PROGRESS_EVERY_S
        if self.on_progress is not None and count > self.reported and due:
            self.on_progress(count)
            self.reported, self.last_report = count, now

    def completion(self, rid: str, attempt: int, t0: float) -> Completion:
        """The stream read to its end as attempt `attempt` (`rid`) of a call begun at
        `t0`, or a retryable VllmError when it was cut short."""
        if not self.done:
            raise VllmError(f"{self.base_url}: stream ended without [DONE]", retryable=True)
        if self.finish == "abort":
            # A server shutting down ends its running requests this way, [DONE] and all:
            # the text is cut short, not an answer.
            raise VllmError(f"{self.base_url}: the server aborted the request", retryable=True)
        completion_tokens = self.usage.get("completion_tokens")
        if self.on_progress is not None and completion_tokens and completion_tokens > self.reported:
            self.on_progress(completion_tokens)
        out = "".join(self.text)
        loop = self.loop
        return Completion(
            out if loop is None else out[: loop.keep_chars], self.finish,
            self.usage.get("prompt_tokens"), completion_tokens, rid, self.model, attempt,
            time.monotonic() - t0, self.first_token_s, loop,
        )  # fmt: skip
