"""The httpx client Longdoc workers use to call a vLLM server's OpenAI-compatible API.

One chat() is one streamed `POST /v1/chat/completions`, retried on connection errors,
timeouts, a server dying mid-stream, 5xx, 408 and 429 (capped exponential backoff,
jittered), never on other 4xx. Each attempt has its own id, `f"{request_id}-{attempt}"`,
sent as `X-Request-Id` and as the body's `request_id`: vLLM 0.32 names the request
`chatcmpl-<X-Request-Id>` (the body field is its fallback) and suffixes it internally, so
attempts never collide in the engine and the caller can tell which attempt wrote a result.
Streaming is what makes cancelling work: vLLM aborts a streaming request when its client
disconnects.

Here: the request, its retries and how a failed attempt is classed. The stream's lines
are read by service.backends.chat_stream, an attempt's deadline and cancel are kept by
service.backends.watch, and what a call returns or raises is service.backends.completion.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from service.backends.chat_stream import ChatStream
from service.backends.completion import Cancelled, Completion, VllmError
from service.backends.sampling import Sampling
from service.backends.watch import Watch


def _error_text(resp: httpx.Response) -> str:
    """vLLM's `{"error": {"message": ...}}` (older: `{"message": ...}`), else the body."""
    try:
        body = resp.json()
        err = body.get("error", body)
        return str(err["message"] if isinstance(err, dict) else err)
    except (ValueError, KeyError, AttributeError):
        return resp.text[:1000]


def _unreachable(exc: httpx.TransportError, before_response: bool) -> bool:
    """Whether a transport error says the server is not there (so no job should be sent
    to it until a probe says it is back), not that one request failed on it. A read or
    first-token timeout is the request's: a busy server is slow, not dead."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    reset = isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError))
    return reset and before_response


class VllmClient:
    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        prefill_tokens_per_s: float = 200.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self.prefill_tokens_per_s = prefill_tokens_per_s
        self.max_retries, self.backoff_s, self.backoff_max_s = max_retries, backoff_s, backoff_max_s
        # No keep-alive: every attempt opens its own connection, so the watcher always gets
        # its socket from the connect trace, and a pooled connection gone stale when the
        # server restarted never costs an attempt. One TCP handshake per LLM call is noise.
        self._http = httpx.Client(
            base_url=self.base_url, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> VllmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int,
        prompt_tokens: int,
        request_id: str,
        response_format: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
        loop_guard: bool = True,
        cancel: threading.Event | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Completion:
        """`loop_guard`: stop a request whose output has started to repeat itself (see
        `ingestion.tasks.repetition`) instead of letting it run to `max_tokens`."""
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": max_tokens,
            **(sampling or Sampling()).body(),
            "stream": True,
            # continuous_usage_stats (vLLM): every chunk carries the completion tokens so
            # far, so progress is exact even when a chunk holds several tokens.
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        if response_format is not None:
            body["response_format"] = response_format
        # The wait for the first token covers the prefill, which grows with the prompt.
        first_budget_s = self.read_timeout_s + prompt_tokens / self.prefill_tokens_per_s
        t0 = time.monotonic()
        last: VllmError | None = None
        for attempt in range(1, self.max_retries + 2):
            rid = f"{request_id}-{attempt}"
            if cancel is not None and cancel.is_set():
                raise Cancelled(rid)
            try:
                return self._attempt(
                    {**body, "request_id": rid}, rid, attempt, t0, first_budget_s,
                    cancel, on_progress, loop_guard,
                )  # fmt: skip
            except VllmError as exc:
                exc.attempts, exc.request_id = attempt, rid
                if not exc.retryable:
                    raise  # 4xx but 408/429: the same request fails the same way
                last = exc
            if attempt > self.max_retries:
                break
            # Jitter, so workers whose server died together do not return in lockstep.
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)
            if cancel is not None and cancel.wait(delay):
                raise Cancelled(rid)
            if cancel is None:
                time.sleep(delay)
        assert last is not None
        last.message = f"gave up after {last.attempts} attempts: {last.message}"
        last.args = (last.message,)
        raise last

    def _attempt(
        self, body: dict[str, Any], rid: str, attempt: int, t0: float, first_budget_s: float,
        cancel: threading.Event | None, on_progress: Callable[[int], None] | None,
        loop_guard: bool,
    ) -> Completion:  # fmt: skip
        start = time.monotonic()
        # read: a backstop only, the watcher's deadline comes first; write, pool: read_timeout_s.
        timeout = httpx.Timeout(
            self.read_timeout_s, connect=self.connect_timeout_s, read=first_budget_s + 1.0
        )
        watch = Watch(cancel, first_budget_s)
        stream = ChatStream(
            self.base_url, str(body["model"]), start, loop_guard=loop_guard,
            on_progress=on_progress,
        )  # fmt: skip
        answered = False
        try:
            with self._http.stream(
                "POST", "/v1/chat/completions", json=body, headers={"X-Request-Id": rid},
                timeout=timeout, extensions={"trace": watch.trace},
            ) as resp:  # fmt: skip
                answered = True
                if resp.status_code >= 400:
                    resp.read()
                    msg = f"HTTP {resp.status_code} from {self.base_url}: {_error_text(resp)}"
                    # 5xx, 408, 429: this request failed, the server is there; retried.
                    retry = resp.status_code >= 500 or resp.status_code in (408, 429)
                    raise VllmError(msg, retryable=retry, status=resp.status_code)
                for line in resp.iter_lines():
                    watch.deadline = time.monotonic() + self.read_timeout_s
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(rid)
                    if stream.feed(line):
                        break
        except httpx.TransportError as exc:
            if watch.reason == "cancelled":
                raise Cancelled(rid) from exc
            why = "no data in time" if watch.reason == "timeout" else type(exc).__name__
            msg = f"{self.base_url}: {why}: {exc}"
            down = _unreachable(exc, before_response=not answered and watch.reason is None)
            raise VllmError(msg, retryable=True, server_down=down) from exc
        except json.JSONDecodeError as exc:
            raise VllmError(f"{self.base_url}: bad stream line: {exc}", retryable=True) from exc
        finally:
            watch.close()
        return stream.completion(rid, attempt, t0)
