"""Helpers for tests that speak raw HTTP to a live server and check what was stored."""

from __future__ import annotations

import select as io_select
import socket
from pathlib import Path

from sqlalchemy import func, select

from service.config import get_settings
from service.db import get_sessionmaker
from service.models import Document, Job


def blob_tmp_files() -> list[str]:
    tmp = get_settings().blobs / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def stored() -> dict[str, object]:
    """Everything an upload or a job could leave behind: rows, blobs, temp files."""
    root = get_settings().blobs
    blobs = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    with get_sessionmaker()() as session:
        docs = session.scalar(select(func.count()).select_from(Document))
        jobs = session.scalar(select(func.count()).select_from(Job))
    return {"documents": docs, "jobs": jobs, "blobs": blobs}


def sha_stored(sha256: str) -> bool:
    root: Path = get_settings().blobs
    return (root / "sha256" / sha256[:2] / sha256[2:4] / sha256).exists()


def read_reply(s: socket.socket) -> bytes:
    """Status line, headers and the whole body (by Content-Length), however it arrives."""
    reply = b""
    try:
        while b"\r\n\r\n" not in reply and (data := s.recv(65536)):
            reply += data
        head, _, body = reply.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
             if line.startswith(b"content-length:")),
            0,
        )  # fmt: skip
        while len(body) < length and (data := s.recv(65536)):
            body += data
        return head + b"\r\n\r\n" + body
    except ConnectionResetError:
        return reply


def send_chunked(s: socket.socket, first: bytes, chunk: bytes, total: int) -> int:
    """Send `first`, then `chunk` again and again as chunked transfer encoding until
    `total` bytes went or the server answered (or hung up). Returns the bytes sent."""
    s.sendall(b"%x\r\n%s\r\n" % (len(first), first))
    sent = 0
    try:
        while sent < total:
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
            if io_select.select([s], [], [], 0)[0]:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent
