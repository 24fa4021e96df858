"""A directory as a tar stream, for `longdoc batch DIR`: made while it uploads, never
whole in memory or on disk, and the same bytes for the same files (names sorted,
fixed mtime, mode, owner), so the API's dedup answers a second upload with the same
batch.

Headers come from `tarfile` (`TarInfo.tobuf`, PAX for long or non-ASCII names); the
body is each file read in chunks and padded to the 512-byte block. `TarFile.addfile`
would copy a whole file in one call, which a generator cannot interleave with the
upload without a thread and a pipe.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BLOCK = tarfile.BLOCKSIZE
CHUNK = 64 * 1024  # what httpx reads at a time


class PackError(Exception):
    """The directory cannot be packed (a file changed or vanished while it streamed)."""


@dataclass(frozen=True)
class Entry:
    name: str  # relative to the directory, with `/`
    path: Path
    size: int


def entries(root: Path) -> tuple[list[Entry], int]:
    """The regular files under `root`, sorted by name, and how many other things
    (symbolic links, sockets, ...) were left out. Links are not followed: a link
    could lead out of the directory, or around in a loop."""
    found: list[Entry] = []
    skipped = 0
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in list(dirs):
            if Path(top, name).is_symlink():
                skipped += 1
        for name in files:
            path = Path(top, name)
            st = path.lstat()
            if not path.is_symlink() and path.is_file():
                rel = path.relative_to(root).as_posix()
                found.append(Entry(rel, path, st.st_size))
            else:
                skipped += 1
    found.sort(key=lambda e: e.name)
    return found, skipped


def _header(entry: Entry) -> bytes:
    info = tarfile.TarInfo(entry.name)
    info.size = entry.size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _body(entry: Entry) -> Iterator[bytes]:
    left = entry.size
    try:
        with entry.path.open("rb") as f:
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise PackError(f"{entry.name} shrank while it was packed")
                left -= len(chunk)
                yield chunk
    except OSError as exc:
        raise PackError(f"{entry.name}: {exc.strerror or exc}") from None
    if entry.size % BLOCK:
        yield bytes(BLOCK - entry.size % BLOCK)


def tar_stream(found: list[Entry]) -> Iterator[bytes]:
    """The tar of `found`, piece by piece. A file that grew since `entries` is cut at
    the size its header gave (the header is written first)."""
    for entry in found:
        yield _header(entry)
        yield from _body(entry)
    yield bytes(2 * BLOCK)  # the end-of-archive marker


class StreamReader:
    """A read()-only file over an iterator of bytes, for httpx's multipart field: it
    has neither fileno() nor seek(), so httpx sends it chunked as it is read."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._held = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._held) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._held += piece
        if size < 0:
            size = len(self._held)
        out, self._held = self._held[:size], self._held[size:]
        return out
