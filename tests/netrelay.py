"""A real TCP relay in front of a real server, for fault injection without mocks.

stop() is the backend dying (connection refused) and start() it coming back;
drop_connections() is the server dying mid-stream as a client sees it (every open
connection cut, both ways, while new ones are still accepted); hold() is a server that
stalls (in a long prefill, or hung): nothing it sends reaches the client until release(),
while what the client sends, a disconnect included, still reaches it. `accepted` counts
the connections made through it (an HTTP client without keep-alive: one per request).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from service.backends.server import HOST, free_port


def _pump(src: socket.socket, dst: socket.socket, gate: threading.Event | None = None) -> None:
    try:
        while data := src.recv(65536):
            if gate is not None:
                gate.wait()
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


class Forwarder:
    """TCP relay to the server; stop() is the backend dying (connection refused)."""

    def __init__(self, target_port: int) -> None:
        self.target = (HOST, target_port)
        self.port = free_port()
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flowing = threading.Event()  # cleared by hold(): server bytes are not relayed
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                with self._lock:
                    self.accepted += 1
                    self._conns += [client, upstream]
                for a, b, gate in ((client, upstream, None), (upstream, client, self._flowing)):
                    threading.Thread(target=_pump, args=(a, b, gate), daemon=True).start()

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def drop_connections(self) -> int:
        """Cut every open connection (the client sees the server vanish mid-response; the
        server sees its client go); keep accepting new ones. Returns how many were cut."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        return len(conns) // 2

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.drop_connections()
        self.release()  # held pumps find their sockets closed and end
