"""tar archives, plain or compressed (gzip, bzip2, xz), read as one forward stream.

Nothing is listed up front: a tar has no table of contents, so the limits are
checked as its headers come (entry count, the size a header declares against the
total) and as its bytes come (total decompressed bytes, compression ratio), and a
broken stream ends the archive where it broke. `tarfile` keeps each member it read;
the list is emptied as we go, so memory does not grow with the entries.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, cast

from ingestion.archives.entries import ArchiveEntry, is_tar
from ingestion.archives.limits import (
    ArchiveError,
    ArchiveLimitError,
    ArchiveLimits,
    Budget,
    EntryError,
)
from ingestion.archives.names import entry_name, printable, unique
from ingestion.archives.streams import CountingReader, Readable

# The largest single read tarfile makes of its own accord is a pax or GNU long-name
# header's data; real ones are a few hundred bytes.
MAX_HEADER_READ = 1024 * 1024
_DAMAGE = (tarfile.TarError, zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)
_LABELS = {"gz": "gzip", "bz2": "bzip2", "xz": "xz"}


def _code(exc: BaseException) -> str:
    ended = isinstance(exc, EOFError) or "unexpected end" in str(exc)
    return "truncated" if ended else "corrupt"


def _entry_error(name: str, exc: BaseException) -> EntryError:
    code = _code(exc)
    what = "the archive ends inside the entry" if code == "truncated" else "the entry is damaged"
    return EntryError(name, code, f"{what}: {exc}")


def _decompressor(compression: str | None, raw: CountingReader) -> Readable:
    if compression == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(raw)
    if compression == "xz":
        return lzma.LZMAFile(cast(IO[bytes], raw))  # it only reads
    return raw


def _screen_type(info: tarfile.TarInfo, name: str) -> None:
    if info.issym():
        raise EntryError(
            name, "link", f"the entry is a symbolic link (to {printable(info.linkname)!r})"
        )
    if info.islnk():
        raise EntryError(
            name, "link", f"the entry is a hard link (to {printable(info.linkname)!r})"
        )
    if info.ischr() or info.isblk():
        raise EntryError(name, "special_file", "the entry is a device")
    if info.isfifo():
        raise EntryError(name, "special_file", "the entry is a FIFO")
    if info.issparse():
        raise EntryError(name, "special_file", "the entry is a sparse file")
    if not info.isreg():
        raise EntryError(name, "special_file", f"the entry has tar type {info.type!r}")


class _TarStream:
    def __init__(
        self, member: IO[bytes], name: str, raw: CountingReader, broken: Callable[[], None]
    ) -> None:
        self._member = member
        self._name = name
        self._raw = raw
        self._start = raw.position
        self._broken = broken

    def read(self, size: int, /) -> bytes:
        try:
            return self._member.read(size)
        except _DAMAGE as exc:
            self._broken()  # a tar stream cannot be resynchronised past damage
            raise _entry_error(self._name, exc) from None

    def compressed(self) -> int:
        return self._raw.position - self._start

    def close(self) -> None:
        self._member.close()


class TarArchive:
    def __init__(
        self, file: Readable, limits: ArchiveLimits, compression: str | None, prefix: bytes
    ) -> None:
        self._limits = limits
        self._raw = CountingReader(file, prefix)
        self._decompressed = _decompressor(compression, self._raw)
        first = self._first_block(compression)
        raw = self._raw
        self._budget = Budget(limits, (lambda: raw.position) if compression else None)
        self._stream = CountingReader(
            self._decompressed, first, max_read=MAX_HEADER_READ, on_read=self._budget.at
        )
        self.broken = False
        try:
            self._tar = tarfile.TarFile(fileobj=self._stream, mode="r")  # type: ignore[arg-type]
        except _DAMAGE as exc:
            if "empty file" in str(exc):
                raise ArchiveError("empty", "the archive holds no files") from None
            raise ArchiveError(_code(exc), f"the tar archive is damaged: {exc}") from None
        # `firstmember` and `members` are TarFile's (undeclared in typeshed): the first
        # header was read by the constructor; every one read is kept on the list.
        if self._tar.firstmember is None:  # type: ignore[attr-defined]
            raise ArchiveError("empty", "the archive holds no files")

    def _first_block(self, compression: str | None) -> bytes:
        try:
            first = self._decompressed.read(512)
        except _DAMAGE as exc:
            label = _LABELS.get(compression or "", "tar")
            raise ArchiveError(_code(exc), f"the {label} stream is damaged: {exc}") from None
        if not first or first == bytes(512):
            raise ArchiveError("empty", "the archive holds no files once decompressed")
        if not is_tar(first):
            label = _LABELS.get(compression or "", "")
            raise ArchiveError(
                "not_an_archive",
                f"this is a {label}-compressed file that is not a tar archive; "
                "supported archives: zip, tar, tar.gz, tar.bz2, tar.xz",
            )
        return first

    def close(self) -> None:
        self._tar.close()
        if self._decompressed is not self._raw:
            self._decompressed.close()  # type: ignore[attr-defined]

    def _broke(self) -> None:
        self.broken = True

    def _next(self, current: ArchiveEntry | None) -> tarfile.TarInfo | EntryError | None:
        try:
            info = self._tar.next()
        except (*_DAMAGE, RecursionError) as exc:
            # Skipping an entry nobody read is when its damage shows: it is that entry's.
            if current is not None and not current.finished:
                return _entry_error(current.name, exc)
            raise ArchiveError(
                _code(exc), f"the tar stream breaks near byte {self._stream.position}: {exc}"
            ) from None
        self._tar.members.clear()  # type: ignore[attr-defined]
        return info

    def _check_end(self) -> None:
        """tarfile ends quietly at a zero block, a damaged header or a short one."""
        block = self._stream.last
        if not block or block.count(0) == 512:
            return
        if len(block) < 512:
            raise ArchiveError("truncated", "the archive ends inside a tar header")
        raise ArchiveError(
            "corrupt",
            f"the tar header at byte {self._tar.offset} is damaged; "
            "the entries after it cannot be read",
        )

    def _entry(self, info: tarfile.TarInfo, seen: set[str]) -> ArchiveEntry:
        raw, limits = info.name, self._limits
        name = entry_name(raw, limits)
        unique(name, raw, seen)
        _screen_type(info, name)
        if info.size > limits.max_entry_bytes:
            raise EntryError(
                name,
                "too_large",
                f"the entry is {info.size} bytes (limit {limits.max_entry_bytes})",
            )
        member = self._tar.extractfile(info)
        if member is None:  # pragma: no cover - regular members always have a file
            raise EntryError(name, "special_file", "the entry has no data")
        stream = _TarStream(member, name, self._raw, self._broke)
        try:
            return ArchiveEntry(name, info.size, stream, limits)
        except EntryError:
            stream.close()
            raise

    def _admit(self, info: tarfile.TarInfo, members: int) -> None:
        limits = self._limits
        if members > limits.max_entries:
            raise ArchiveLimitError(
                "max_entries", limits.max_entries, f"more than {limits.max_entries} entries"
            )
        self._budget.expect(info.offset_data + info.size, printable(info.name))

    def __iter__(self) -> Iterator[ArchiveEntry | EntryError]:
        seen: set[str] = set()
        members = files = 0
        current: ArchiveEntry | None = None
        try:
            while not self.broken:
                self._budget.check()
                if current is not None:
                    current.close()
                info = self._next(current)
                current = None
                if isinstance(info, EntryError):
                    yield info
                    return
                if info is None:
                    self._check_end()
                    break
                members += 1
                self._admit(info, members)
                if info.isdir():
                    continue
                files += 1
                try:
                    current = self._entry(info, seen)
                except EntryError as exc:
                    yield exc
                    continue
                yield current
        finally:
            if current is not None:
                current.close()
        if files == 0 and not self.broken:
            raise ArchiveError("empty", "the archive holds no files, only directories")
