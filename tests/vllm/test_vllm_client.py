"""VllmClient (service/backends/client.py) against the session's real SmolLM2 vLLM server.

Faults come from a real TCP relay in front of the real server (tests/netrelay.py): stopped
(connection refused) or cutting its connections mid-stream (the server dying as the client
sees it). Cancellation is checked on the server's own /metrics. Nothing is mocked; every
generation is short (small max_tokens, or cancelled).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import jsonschema
import pymupdf
import pytest

from ingestion.tasks.prompts import build_messages, render_pages
from ingestion.tasks.repetition import find_loop
from service.backends import metrics as vllm_metrics
from service.backends.client import VllmClient
from service.backends.completion import Cancelled, VllmError
from service.backends.sampling import Sampling
from service.backends.server import VllmServer
from service.config import Settings
from tests.conftest import corpus_file
from tests.netrelay import Forwarder
from tests.vllm.conftest import MAX_MODEL_LEN, SMOLLM2
from tests.waiting import wait_for

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
COUNTING = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]
STORY = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]


def looping_prompt() -> list[dict[str, str]]:
    """Summarising the first page of the LaTeX3 style guide, SmolLM2 135M greedy says
    one sentence over and over (the whole guide: another sentence, 47 times)."""
    doc = pymupdf.open(corpus_file("pdf/latex3-styleguide.pdf"))
    return build_messages("summarize", {}, "single", render_pages([(1, doc[0].get_text())]))


@pytest.fixture
def relay(smollm2_server: VllmServer) -> Iterator[Forwarder]:
    forwarder = Forwarder(smollm2_server.port)
    forwarder.start()
    yield forwarder
    forwarder.stop()


def metric(server: VllmServer, name: str, **labels: str) -> float:
    """Sum of the samples of `name` on the server's /metrics whose labels include `labels`."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).raise_for_status().text
    return vllm_metrics.Metrics(text).total(name, **labels)


def wait_idle(server: VllmServer, timeout: float = 5.0) -> float:
    """Seconds until the server runs no request; fails after `timeout`."""
    t0 = time.monotonic()

    def idle() -> bool:
        return metric(server, "vllm:num_requests_running") == 0

    wait_for(idle, timeout, 0.05, "the server to run no request")
    return time.monotonic() - t0


def finished(server: VllmServer, at_least: float = 0.0) -> float:
    """Requests the server saw to their end (stop or length: an aborted one is not counted
    there), read once it runs none and the count has reached `at_least`: the count is
    recorded just after the response, with the running gauge's drop."""
    wait_idle(server)
    counts: list[float] = []

    def reached() -> bool:
        counts.append(metric(server, "vllm:request_success_total"))
        return counts[-1] >= at_least

    wait_for(reached, timeout=5, interval=0.05, what=f"{at_least:.0f} finished requests")
    return counts[-1]


def test_chat_streams_a_real_completion(smollm2_server: VllmServer) -> None:
    progress: list[int] = []
    with VllmClient(smollm2_server.url) as client:
        c = client.chat(
            model=SMOLLM2, messages=QUESTION, max_tokens=32, prompt_tokens=40,
            request_id="job-chat", on_progress=progress.append,
        )  # fmt: skip
    assert "paris" in c.text.lower()
    assert (c.request_id, c.attempts, c.model) == ("job-chat-1", 1, SMOLLM2)
    assert c.finish_reason in ("stop", "length")
    # The prompt as the server counts it: the chat template applied, as /tokenize does.
    tokenized = httpx.post(
        f"{smollm2_server.url}/tokenize", json={"model": SMOLLM2, "messages": QUESTION}
    ).raise_for_status()
    assert c.prompt_tokens == tokenized.json()["count"] > 10
    assert c.completion_tokens is not None and 0 < c.completion_tokens <= 32
    assert c.first_token_s is not None and 0 < c.first_token_s <= c.elapsed_s < 30
    # Rate-limited: the first token at once, then at most ~2/s, and the final count.
    assert progress and progress == sorted(set(progress))
    assert progress[0] <= 2 and progress[-1] == c.completion_tokens
    assert len(progress) <= 2 + c.elapsed_s * 2


def test_vllm_names_the_request_after_x_request_id(smollm2_server: VllmServer) -> None:
    """What the client relies on, on the real server: the header names the request (the
    response id is chatcmpl-<header>); the body's request_id only when no header is sent."""
    body = {"model": SMOLLM2, "messages": QUESTION, "max_tokens": 1, "request_id": "body-id"}
    url = f"{smollm2_server.url}/v1/chat/completions"
    with_header = httpx.post(url, json=body, headers={"X-Request-Id": "hdr-id"}, timeout=30)
    assert with_header.raise_for_status().json()["id"] == "chatcmpl-hdr-id"
    assert httpx.post(url, json=body, timeout=30).json()["id"] == "chatcmpl-body-id"


def test_structured_output_validates(smollm2_server: VllmServer) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Give the capital of France and its country."}]
    with VllmClient(smollm2_server.url) as client:
        c = client.chat(
            model=SMOLLM2, messages=messages, max_tokens=64, prompt_tokens=30,
            request_id="job-json",
            response_format={
                "type": "json_schema", "json_schema": {"name": "place", "schema": schema},
            },
        )  # fmt: skip
    assert c.finish_reason == "stop", c.text
    jsonschema.validate(json.loads(c.text), schema)


def test_prompt_too_long_fails_once_without_retry(relay: Forwarder) -> None:
    messages = [{"role": "user", "content": "hello " * 3000}]
    t0 = time.monotonic()
    with (
        VllmClient(relay.url, max_retries=3, backoff_s=5, backoff_max_s=5) as client,
        pytest.raises(VllmError) as info,
    ):
        client.chat(
            model=SMOLLM2, messages=messages, max_tokens=16, prompt_tokens=3000,
            request_id="job-long",
        )  # fmt: skip
    err = info.value
    assert (err.status, err.retryable, err.server_down, err.attempts, err.request_id) == (
        400, False, False, 1, "job-long-1",
    )  # fmt: skip
    assert relay.accepted == 1  # one connection: one attempt
    # One backoff would sleep at least 2.5 s; the margin is for a loaded machine.
    assert time.monotonic() - t0 < 2.5
    # vLLM's own text, naming the limit and the prompt's length (0.32 stops counting at
    # one past the limit: "your prompt contains at least 2049 input tokens").
    assert "HTTP 400" in err.message and f"maximum context length is {MAX_MODEL_LEN}" in err.message
    assert f"{MAX_MODEL_LEN + 1} input tokens" in err.message, err.message


def test_connection_refused_retries_with_backoff(relay: Forwarder) -> None:
    relay.stop()
    t0 = time.monotonic()
    with (
        VllmClient(relay.url, max_retries=3, backoff_s=0.2, backoff_max_s=0.5) as client,
        pytest.raises(VllmError) as info,
    ):
        client.chat(
            model=SMOLLM2, messages=QUESTION, max_tokens=8, prompt_tokens=40,
            request_id="job-down",
        )  # fmt: skip
    elapsed = time.monotonic() - t0
    err = info.value
    assert (err.retryable, err.server_down, err.status, err.attempts, err.request_id) == (
        True, True, None, 4, "job-down-4",
    )  # fmt: skip
    assert "ConnectError" in err.message and "4 attempts" in err.message
    # Backoff 0.2, 0.4, then capped at 0.5; each jittered to between half and all of it.
    assert (0.2 + 0.4 + 0.5) / 2 <= elapsed < 0.2 + 0.4 + 0.5 + 0.5


def test_server_dying_mid_stream_is_retried_with_a_new_id(
    smollm2_server: VllmServer, relay: Forwarder
) -> None:
    progress: list[int] = []
    cut: list[int] = []
    finished_before = finished(smollm2_server)

    def on_progress(n: int) -> None:
        progress.append(n)
        if not cut:  # the first attempt's first token: cut it off mid-stream
            cut.append(relay.drop_connections())

    with VllmClient(relay.url, backoff_s=0.1) as client:
        c = client.chat(
            model=SMOLLM2, messages=COUNTING, max_tokens=24, prompt_tokens=40,
            request_id="job-cut", on_progress=on_progress,
        )  # fmt: skip
    assert cut == [1]
    assert (c.attempts, c.request_id, relay.accepted) == (2, "job-cut-2", 2)
    assert c.text and c.completion_tokens == 24 and c.finish_reason == "length"
    assert progress[-1] == 24
    # The cut-off attempt was aborted, not left running: one request finished, not two.
    wait_idle(smollm2_server)
    assert finished(smollm2_server, finished_before + 1) == finished_before + 1


def test_cancel_aborts_the_request_on_the_server(smollm2_server: VllmServer) -> None:
    cancel = threading.Event()
    seen: dict[str, float] = {}
    finished_before = finished(smollm2_server)

    def on_progress(n: int) -> None:
        if not cancel.is_set():
            seen["running"] = metric(smollm2_server, "vllm:num_requests_running")
            seen["at"] = time.monotonic()
            cancel.set()

    with VllmClient(smollm2_server.url) as client, pytest.raises(Cancelled) as info:
        # ~30 s of decoding if it were not cancelled.
        client.chat(
            model=SMOLLM2, messages=STORY, max_tokens=1500, prompt_tokens=40,
            request_id="job-cancel", cancel=cancel, on_progress=on_progress,
        )  # fmt: skip
    done = time.monotonic()
    assert info.value.request_id == "job-cancel-1"
    assert seen["running"] == 1
    # Measured from the cancel, not from the start: a loaded CI machine once took 12 s
    # to the first token, which says nothing about how fast a cancel lands.
    assert done - seen["at"] < 2
    # Not running and not finished: aborted (the count does move for a finished request).
    assert wait_idle(smollm2_server) < 3
    assert finished(smollm2_server) == finished_before
    with VllmClient(smollm2_server.url) as client:
        client.chat(
            model=SMOLLM2, messages=QUESTION, max_tokens=1, prompt_tokens=40, request_id="one"
        )
    assert finished(smollm2_server, finished_before + 1) == finished_before + 1


def test_cancel_before_the_first_token(smollm2_server: VllmServer, relay: Forwarder) -> None:
    """A cancel while nothing arrives (a stalled server: the relay holds its bytes) does
    not wait for a chunk, nor for a timeout; the disconnect still reaches the server."""
    cancel = threading.Event()
    relay.hold()
    threading.Timer(0.5, cancel.set).start()
    t0 = time.monotonic()
    with VllmClient(relay.url, read_timeout_s=30) as client, pytest.raises(Cancelled):
        client.chat(
            model=SMOLLM2, messages=STORY, max_tokens=1500, prompt_tokens=40,
            request_id="job-early", cancel=cancel,
        )  # fmt: skip
    assert 0.5 <= time.monotonic() - t0 < 1.5
    wait_idle(smollm2_server)


def test_first_token_timeout_is_sized_to_the_prompt(
    smollm2_server: VllmServer, relay: Forwarder
) -> None:
    relay.hold()
    # 0.3 s + 50 tokens at 100 tokens/s: 0.8 s for the first token (httpx's own read
    # timeout, the backstop, would be 1.8 s).
    t0 = time.monotonic()
    client = VllmClient(relay.url, read_timeout_s=0.3, prefill_tokens_per_s=100, max_retries=0)
    with client, pytest.raises(VllmError) as info:
        client.chat(
            model=SMOLLM2, messages=STORY, max_tokens=1500, prompt_tokens=50,
            request_id="job-slow",
        )  # fmt: skip
    # The watcher's deadline, not httpx's backstop (that one says ReadTimeout).
    assert 0.8 <= time.monotonic() - t0 < 1.7
    assert info.value.retryable and "no data in time" in info.value.message
    assert not info.value.server_down  # slow is not dead: the probe decides that
    wait_idle(smollm2_server)


def test_stall_between_chunks_times_out(smollm2_server: VllmServer, relay: Forwarder) -> None:
    held: list[float] = []

    def on_progress(n: int) -> None:
        if not held:  # streaming has begun; now the server goes quiet
            relay.hold()
            held.append(time.monotonic())

    # The first token may take 0.3 + 30 s; later chunks only 0.3 s apart.
    client = VllmClient(relay.url, read_timeout_s=0.3, prefill_tokens_per_s=1, max_retries=0)
    with client, pytest.raises(VllmError) as info:
        client.chat(
            model=SMOLLM2, messages=STORY, max_tokens=1500, prompt_tokens=30,
            request_id="job-stall", on_progress=on_progress,
        )  # fmt: skip
    assert 0.3 <= time.monotonic() - held[0] < 1.5
    assert info.value.retryable and "no data in time" in info.value.message
    assert not info.value.server_down  # slow is not dead: the probe decides that
    wait_idle(smollm2_server)


def test_a_looping_output_is_stopped_where_it_starts_to_loop(smollm2_server: VllmServer) -> None:
    """Greedy decoding, the same prompt twice: unguarded it loops to its budget; guarded
    the request is stopped (the server runs nothing after) and cut after one copy."""
    ask = {"model": SMOLLM2, "messages": looping_prompt(), "max_tokens": 160, "prompt_tokens": 600}
    with VllmClient(smollm2_server.url) as client:
        free = client.chat(**ask, request_id="loop-off", loop_guard=False)  # type: ignore[arg-type]
        guarded = client.chat(**ask, request_id="loop-on")  # type: ignore[arg-type]
    assert free.finish_reason == "length" and free.loop is None
    assert find_loop(free.text) is not None, free.text  # it did loop
    assert guarded.finish_reason == "repetition" and guarded.loop is not None, guarded.text
    assert guarded.completion_tokens is not None and free.completion_tokens is not None
    assert guarded.completion_tokens < free.completion_tokens
    assert free.text.startswith(guarded.text) and find_loop(guarded.text + "\n") is None
    wait_idle(smollm2_server)


def test_sampling_reaches_the_server(smollm2_server: VllmServer) -> None:
    """vLLM checks the parameters it is sent (an invalid penalty is its 400), and the
    penalty a loop is retried with ends the loop."""
    with VllmClient(smollm2_server.url) as client, pytest.raises(VllmError) as info:
        client.chat(
            model=SMOLLM2, messages=QUESTION, max_tokens=8, prompt_tokens=40,
            request_id="bad-penalty", sampling=Sampling(repetition_penalty=-1.0),
        )  # fmt: skip
    assert info.value.status == 400 and "repetition_penalty" in info.value.message
    penalty = Settings().loop_retry_repetition_penalty
    with VllmClient(smollm2_server.url) as client:
        penalised = client.chat(
            model=SMOLLM2, messages=looping_prompt(), max_tokens=160, prompt_tokens=600,
            request_id="penalised", sampling=Sampling(repetition_penalty=penalty),
        )  # fmt: skip
    assert penalised.loop is None and find_loop(penalised.text) is None, penalised.text
