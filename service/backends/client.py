"""The httpx client Longdoc workers use to call a vLLM server's OpenAI-compatible API.

One chat() is one streamed `POST /v1/chat/completions`, retried on connection errors,
timeouts, a server dying mid-stream, 5xx, 408 and 429 (capped exponential backoff,
jittered), never on other 4xx. Each attempt has its own id, `f"{request_id}-{attempt}"`,
sent as `X-Request-Id` and as the body's `request_id`: vLLM 0.32 names the request
`chatcmpl-<X-Request-Id>` (the body field is its fallback) and suffixes it internally, so
attempts never collide in the engine and the caller can tell which attempt wrote a result.
Streaming is what makes cancelling work: vLLM aborts a streaming request when its client
disconnects.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx

from ingestion.tasks.repetition import TAIL_CHARS, Loop, find_loop
from service.backends.sampling import Sampling

_WATCH_S = 0.1  # how often the watcher looks at the caller's cancel event
_PROGRESS_EVERY_S = 0.5  # on_progress at most ~2/s: callers write it to the database
_LOOP_CHECK_EVERY = 16  # content chunks between looks for a loop (each looks at a tail)


class VllmError(Exception):
    """A request that failed for good. `retryable` says whether trying later (e.g. after
    the server comes back) may succeed: connection errors/5xx/429 after retries are
    retryable, other 4xx (prompt too long, bad schema...) are not. `status` is the HTTP
    status or None. `server_down`: the server itself could not be reached (refused, no
    connection in time, the connection reset before any response), as opposed to one
    request failing on a server that answers (a 5xx, a 429, a stream cut or aborted)."""

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None,
        attempts: int = 1, request_id: str | None = None, server_down: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.server_down = server_down
        self.status = status
        self.attempts = attempts  # how many were made
        self.request_id = request_id  # the last attempt's id


class Cancelled(Exception):
    """The caller's cancel event was set; the request was aborted."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request {request_id} cancelled")
        self.request_id = request_id


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    request_id: str  # the id of the attempt that succeeded
    model: str
    attempts: int
    elapsed_s: float  # the whole call, backoff and failed attempts included
    first_token_s: float | None  # from the start of the attempt that succeeded (~prefill)
    # The output began to loop and the request was stopped there: `text` is cut after the
    # first copy of the repeated block, `finish_reason` is "repetition".
    loop: Loop | None = None


class _Watch:
    """One attempt's watchdog thread, for the read deadline and the cancel event.
    Why: the wait for the first token (queue + prefill) can be long with no byte arriving,
    and neither a cancel nor the shorter between-chunk timeout may wait for a chunk.
    httpx's read timeout is fixed per request (httpcore takes it once, when the body
    starts), so it is the first-token budget, a backstop; this thread keeps the real
    deadline (the budget until the first line, then read_timeout_s after each line). A
    thread blocked on a socket is not woken by close() from another (Linux), it is by
    shutdown(): the watcher takes the attempt's socket from httpcore's connect trace and
    shuts it down; the reader fails at once and `reason` says why; the server aborts."""

    def __init__(self, cancel: threading.Event | None, first_budget_s: float) -> None:
        self.cancel = cancel
        self.deadline = time.monotonic() + first_budget_s
        self.reason: str | None = None  # "cancelled" or "timeout" once it acted
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-watch", daemon=True)
        self._thread.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            with self._lock:
                self._sock = info["return_value"].get_extra_info("socket")
            if self.reason is not None:  # cancelled while connecting
                self._abort(self.reason)

    def _run(self) -> None:
        # It polls: the caller's Event cannot wake it for us, and the deadline moves both
        # ways (later with each line, earlier from the first-token budget to the read one).
        while not self._done.is_set():
            left = self.deadline - time.monotonic()
            if self.cancel is not None and self.cancel.is_set():
                self._abort("cancelled")
            elif left <= 0:
                self._abort("timeout")
            else:
                (self.cancel or self._done).wait(min(left, _WATCH_S))

    def _abort(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            # EBADF when httpcore already closed it; the object's fd is -1 by then, so a
            # reused descriptor number is never touched.
            with contextlib.suppress(OSError, AttributeError):
                self._sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        self._done.set()

    def close(self) -> None:
        # Not joined: it sees _done within _WATCH_S and ends; a join would add that much to
        # every call. A late _abort() is harmless: the closed socket object has no fd.
        self._done.set()


def _loop_at_end(pieces: list[str], chars: int) -> Loop | None:
    """`find_loop` on the output's tail only: joining the whole output at every check
    would copy it over and over. A piece holds at least one character, so the last
    TAIL_CHARS pieces hold all of the tail; `keep_chars` is moved back to the whole."""
    tail = "".join(pieces[-TAIL_CHARS:])
    found = find_loop(tail)
    if found is None:
        return None
    return replace(found, keep_chars=found.keep_chars + chars - len(tail))


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

    def _attempt(  # noqa: C901
        self, body: dict[str, Any], rid: str, attempt: int, t0: float, first_budget_s: float,
        cancel: threading.Event | None, on_progress: Callable[[int], None] | None,
        loop_guard: bool,
    ) -> Completion:  # fmt: skip
        start = time.monotonic()
        # read: a backstop only, the watcher's deadline comes first; write, pool: read_timeout_s.
        timeout = httpx.Timeout(
            self.read_timeout_s, connect=self.connect_timeout_s, read=first_budget_s + 1.0
        )
        watch = _Watch(cancel, first_budget_s)
        text, usage, model, finish = list[str](), dict[str, Any](), str(body["model"]), None
        first_token_s: float | None = None
        tokens, reported, last_report, done, answered = 0, 0, 0.0, False, False
        loop: Loop | None = None
        chars = 0  # of text so far
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
                    if not line.startswith("data:"):
                        continue  # blank separators, SSE comments
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:  # vLLM reports failures mid-stream this way
                        err = chunk["error"]
                        code = err.get("code") if isinstance(err, dict) else None
                        status = code if isinstance(code, int) else None
                        retry = status is None or status >= 500
                        msg = f"error from {self.base_url} mid-stream: {err}"
                        raise VllmError(msg, retryable=retry, status=status)
                    if first_token_s is None:
                        first_token_s = time.monotonic() - start
                    model = chunk.get("model") or model
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        if choice.get("index", 0) != 0:
                            continue
                        if content := (choice.get("delta") or {}).get("content"):
                            text.append(content)
                            tokens += 1
                            chars += len(content)
                            if loop_guard and tokens % _LOOP_CHECK_EVERY == 0:
                                loop = _loop_at_end(text, chars)
                        finish = choice.get("finish_reason") or finish
                    count = usage.get("completion_tokens") or tokens
                    now = time.monotonic()
                    due = reported == 0 or now - last_report >= _PROGRESS_EVERY_S
                    if on_progress is not None and count > reported and due:
                        on_progress(count)
                        reported, last_report = count, now
                    if loop is not None:
                        # Leaving the stream closes the connection: vLLM aborts the request.
                        done, finish = True, "repetition"
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
        if not done:
            raise VllmError(f"{self.base_url}: stream ended without [DONE]", retryable=True)
        if finish == "abort":
            # A server shutting down ends its running requests this way, [DONE] and all:
            # the text is cut short, not an answer.
            raise VllmError(f"{self.base_url}: the server aborted the request", retryable=True)
        completion_tokens = usage.get("completion_tokens")
        if on_progress is not None and completion_tokens and completion_tokens > reported:
            on_progress(completion_tokens)
        out = "".join(text)
        return Completion(
            out if loop is None else out[: loop.keep_chars], finish, usage.get("prompt_tokens"),
            completion_tokens, rid, model, attempt, time.monotonic() - t0, first_token_s, loop,
        )  # fmt: skip
