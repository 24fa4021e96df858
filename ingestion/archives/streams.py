"""A forward-only reader that counts what passes through it.

Used twice for a tar: over the raw upload (compressed bytes consumed, for the
ratio) and between the decompressor and `tarfile` (decompressed bytes, for the
total). It seeks forward by reading and discarding in small pieces, so a file
that cannot seek (an upload in flight) works, and skipping is counted too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Protocol

from ingestion.archives.limits import ArchiveError

CHUNK = 64 * 1024


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class CountingReader:
    """`source` after `prefix` (bytes already taken from it to sniff the type).

    `max_read`: a single read larger than this is refused (``corrupt``): `tarfile`
    reads a pax or GNU long-name header in one call of its declared size, which a
    crafted archive sets to gigabytes. `on_read(position)` runs after every read.
    """

    def __init__(
        self,
        source: Readable | IO[bytes],
        prefix: bytes = b"",
        *,
        max_read: int | None = None,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self._source = source
        self._prefix = prefix
        self._max_read = max_read
        self._on_read = on_read
        self.position = 0
        self.last = b""  # what the last read returned: tells a clean end from a bad header
        self.mode = "rb"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # forward only, see seek

    def tell(self) -> int:
        return self.position

    def _take(self, size: int) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            if len(data) < size:
                data += self._source.read(size - len(data))
            return data
        return self._source.read(size)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            if self._max_read is not None:
                raise ArchiveError("corrupt", "the archive asks for an unbounded read")
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        if self._max_read is not None and size > self._max_read:
            raise ArchiveError(
                "corrupt",
                f"a tar header asks to read {size} bytes at once (limit {self._max_read}); "
                "a crafted archive?",
            )
        data = self._take(size)
        self.position += len(data)
        self.last = data
        if self._on_read is not None:
            self._on_read(self.position)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.position + offset
        if whence not in (0, 1) or target < self.position:
            raise ArchiveError("corrupt", "the archive needs a backward seek in its stream")
        while self.position < target:
            if not self.read(min(CHUNK, target - self.position)):
                break  # past the end: the next read reports it
        return self.position
