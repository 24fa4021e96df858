"""One entry of an archive: its name, type and bounded bytes.

An entry is read while the iterator stands on it (a tar stream cannot go back);
its first `formats.HEAD_BYTES` are read before it is handed out, to tell what it
is the way uploads are told (magic bytes first, then the name), and an archive
inside the archive is refused here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ingestion.archives.limits import ArchiveLimits, EntryError
from ingestion.documents import formats, zipsniff
from ingestion.types import IngestError

CHUNK = 64 * 1024

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# (magic, what it is, the tar compression it stands for, if one).
COMPRESSED_MAGIC: tuple[tuple[bytes, str, str | None], ...] = (
    (b"\x1f\x8b\x08", "a gzip-compressed file", "gz"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "xz"),
    (b"(\xb5/\xfd", "a zstd-compressed file", None),
    (b"7z\xbc\xaf'\x1c", "a 7-Zip archive", None),
    (b"Rar!\x1a\x07", "a RAR archive", None),
)


def is_tar(head: bytes) -> bool:
    return head[257:262] == b"ustar"  # POSIX "ustar\0" and GNU "ustar "


def is_bzip2(head: bytes) -> bool:
    return head[:3] == b"BZh" and head[3:4].isdigit() and head[3:4] != b"0"


def compressed_kind(head: bytes) -> tuple[str, str | None] | None:
    """(what, tar compression) for a compressed stream or a foreign archive."""
    if is_bzip2(head):
        return "a bzip2-compressed file", "bz2"
    for magic, what, compression in COMPRESSED_MAGIC:
        if head.startswith(magic):
            return what, compression
    return None


def _archive_inside(head: bytes, name: str) -> str | None:
    """What archive `head` starts, or None; a ZIP-based document is no archive."""
    if head.startswith(ZIP_MAGIC):
        try:
            formats.detect_media_type(head, name)
        except IngestError:
            # A package the local headers name (ODT, XLSX) is a document of the wrong
            # type, told by formats below; an unnamed ZIP is an archive.
            return "a ZIP archive" if zipsniff.kind_from_head(head) is None else None
        return None
    if is_tar(head):
        return "a tar archive"
    found = compressed_kind(head)
    return found[0] if found is not None else None


def media_type(name: str, head: bytes) -> str:
    """The entry's media type, or `EntryError` (``nested_archive``, or formats' code)."""
    inside = _archive_inside(head, name)
    if inside is not None:
        raise EntryError(
            name, "nested_archive", f"this entry is {inside}; archives inside archives are not read"
        )
    try:
        return formats.detect_media_type(head, name)
    except IngestError as exc:
        raise EntryError(name, exc.code, exc.reason) from None


class EntryStream(Protocol):
    """An entry's bytes as its format gives them."""

    def read(self, size: int, /) -> bytes:
        """Up to `size` bytes, b"" at the end; `EntryError` when the entry is damaged."""
        ...

    def compressed(self) -> int:
        """Compressed bytes behind what was read so far."""
        ...

    def close(self) -> None: ...


class ArchiveEntry:
    """A file in an archive. `name` is its normalised path (its custom_id), `size` the
    size its header declares, `media_type` what its first bytes say it is.

    `chunks()` and `read()` give its bytes, counted as they come: past the limits,
    or damaged, they raise `EntryError` (or `ArchiveLimitError` for a whole-archive
    limit). Valid only until the iterator moves on.
    """

    def __init__(self, name: str, size: int, stream: EntryStream, limits: ArchiveLimits) -> None:
        self.name = name
        self.size = size
        self._stream = stream
        self._limits = limits
        self._produced = 0
        self._done = False
        self._closed = False
        self.error: EntryError | None = None
        head = b""
        while len(head) < formats.HEAD_BYTES and not self._done:
            head += self._pull(formats.HEAD_BYTES - len(head))
        self._pending = head
        self.media_type = media_type(name, head)

    def __repr__(self) -> str:
        return f"ArchiveEntry({self.name!r}, size={self.size}, media_type={self.media_type!r})"

    @property
    def finished(self) -> bool:
        """Read to its end, or failed."""
        return (self._done and not self._pending) or self.error is not None

    def _fail(self, code: str, reason: str) -> EntryError:
        self.error = EntryError(self.name, code, reason)
        return self.error

    def _pull(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except EntryError as exc:
            self.error = exc
            raise
        self._produced += len(data)
        limits = self._limits
        if self._produced > limits.max_entry_bytes:
            raise self._fail(
                "too_large",
                f"the entry is over {limits.max_entry_bytes} bytes once decompressed "
                f"(its header said {self.size})",
            )
        if self._produced > limits.ratio_floor:
            packed = max(self._stream.compressed(), 1)
            if self._produced > limits.max_entry_ratio * packed:
                raise self._fail(
                    "compression_ratio",
                    f"{packed} compressed bytes gave over {self._produced} (limit "
                    f"{limits.max_entry_ratio:g}:1); a decompression bomb?",
                )
        if not data:
            self._done = True
        return data

    def chunks(self) -> Iterator[bytes]:
        """The entry's bytes in pieces of at most 64 KiB (the first: up to 8 KiB)."""
        while True:
            if self._closed:
                raise ValueError(f"entry {self.name!r} can no longer be read: the archive moved on")
            if self.error is not None:
                raise self.error
            if self._pending:
                data, self._pending = self._pending, b""
                yield data
            elif self._done:
                return
            elif data := self._pull(CHUNK):
                yield data

    def read(self) -> bytes:
        """All of the entry's bytes (at most `max_entry_bytes`)."""
        return b"".join(self.chunks())

    def close(self) -> None:
        self._closed = True
        self._stream.close()
