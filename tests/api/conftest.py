"""A real uvicorn server for the API tests that must talk HTTP over a socket (the
in-process test client buffers a request body before the app sees it), and the
official `openai` SDK pointed at it, for the tests of the OpenAI-shaped APIs."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import uvicorn

from tests.waiting import wait_for


@pytest.fixture(scope="module")
def live_server(database: str, broker: Any) -> Iterator[tuple[str, int]]:
    from service.api.main import app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, interval=0.05, what="uvicorn to start")
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=10)


def sdk(base: str, key: str) -> openai.OpenAI:
    # No retries: each refusal must come from the one request the test made.
    return openai.OpenAI(api_key=key, base_url=f"{base}/v1", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def base(live_server: tuple[str, int]) -> str:
    host, port = live_server
    return f"http://{host}:{port}"


@pytest.fixture(scope="module")
def ours(base: str, api_key: str) -> Iterator[openai.OpenAI]:
    with sdk(base, api_key) as client:
        yield client


@pytest.fixture(scope="module")
def theirs(base: str, other_key: str) -> Iterator[openai.OpenAI]:
    with sdk(base, other_key) as client:
        yield client
