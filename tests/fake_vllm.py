"""A stand-in for what discovery asks a vLLM server, for what no real server can be
made to report on demand (another model than the one it loaded): `GET /v1/models` in
vLLM's shape, with the model and context the test sets, and `GET /metrics` with the
text captured from a real server of that model (tests/vllm/data), edited where a test
says so. A real HTTP server on a real socket; it answers nothing else.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from tests.peer import LocalPeer

DATA = Path(__file__).resolve().parent / "vllm" / "data"
GEMMA3_ID = "google/gemma-3-270m"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# /metrics of real CPU servers with a 1 GiB pool: SmolLM2 364 blocks, Gemma 3 2,730.
CAPTURED = {
    GEMMA3_ID: DATA / "metrics-gemma3-270m.txt",
    SMOLLM2_ID: DATA / "metrics-smollm2-135m-instruct.txt",
}


def captured_metrics(model: str) -> str:
    return CAPTURED[model].read_text()


class FakeVllm(LocalPeer):
    """Serves `model` at `max_model_len` with `metrics` (default: the model's captured
    text); `serve` changes what it reports from the next request on."""

    def __init__(self, model: str, max_model_len: int, metrics: str | None = None) -> None:
        self._lock = threading.Lock()
        self.serve(model, max_model_len, metrics)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                with fake._lock:
                    model, length, metrics = fake.model, fake.max_model_len, fake.metrics
                if self.path == "/v1/models":
                    entry = {
                        "id": model,
                        "object": "model",
                        "created": 0,
                        "owned_by": "vllm",
                        "root": f"/models/{model}",
                        "parent": None,
                        "max_model_len": length,
                    }
                    body = json.dumps({"object": "list", "data": [entry]}).encode()
                    ctype = "application/json"
                elif self.path == "/metrics":
                    body, ctype = metrics.encode(), "text/plain; version=0.0.4"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)

    def serve(self, model: str, max_model_len: int, metrics: str | None = None) -> None:
        with self._lock:
            self.model, self.max_model_len = model, max_model_len
            self.metrics = captured_metrics(model) if metrics is None else metrics
