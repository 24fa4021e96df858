"""A hostile HTTP peer where a vLLM server should be, for failures a real server
cannot be made to produce on demand: every `POST /tokenize` a 500, or a chat request
answered 429, 500 or cut off mid-stream. A real HTTP server on a real socket (a
ThreadingHTTPServer); it answers nothing else usefully, and counts what it was asked.
"""

from __future__ import annotations

from collections import Counter
from http.server import BaseHTTPRequestHandler
from typing import Literal

from tests.peer import LocalPeer

ChatFault = Literal["429", "500", "cut"]


class HostilePeer(LocalPeer):
    def __init__(self, chat: ChatFault = "500") -> None:
        self.chat = chat
        self.hits: Counter[str] = Counter()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _reply(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                peer.hits[self.path] += 1
                self._reply(500, b'{"error": {"message": "hostile peer"}}')

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.hits[self.path] += 1
                if self.path == "/v1/chat/completions" and peer.chat == "cut":
                    # A stream that starts, then the connection goes: a request that
                    # failed mid-way on a server that did answer.
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    chunk = b'data: {"choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                status = 429 if self.path == "/v1/chat/completions" and peer.chat == "429" else 500
                self._reply(status, b'{"error": {"message": "hostile peer says no"}}')

        super().__init__(Handler)
