"""ZIP archives, read entry by entry from a seekable file.

The central directory is the table of contents, so the whole-archive limits are
checked on it before anything is decompressed: first the end record's entry
count and directory size (before `zipfile` lists the entries, which costs memory
for each), then the declared sizes. Declared sizes can lie; `zipfile` never gives
more than an entry's declared size and checks its CRC, and every byte is
counted again as it is read.
"""

from __future__ import annotations

import lzma
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import IO

from ingestion.archives.entries import ArchiveEntry
from ingestion.archives.limits import (
    ArchiveError,
    ArchiveLimitError,
    ArchiveLimits,
    Budget,
    EntryError,
)
from ingestion.archives.names import entry_name, unique

_END = b"PK\x05\x06"
_END64_LOCATOR = b"PK\x06\x07"
_END64 = b"PK\x06\x06"
# A central directory record: 46 bytes, the name, and room for ordinary extra fields.
_RECORD_BYTES = 46 + 512
_METHODS = frozenset(
    {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
)
_DAMAGE = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError, ValueError)


def _end_record(file: IO[bytes], size: int) -> tuple[int, int]:
    """(entries, central directory bytes) from the end record, ZIP64 too."""
    tail_len = min(size, 22 + 65535)
    file.seek(size - tail_len)
    tail = file.read(tail_len)
    at = tail.rfind(_END)
    if at < 0 or at + 22 > len(tail):
        raise ArchiveError(
            "corrupt", "the ZIP archive has no end-of-directory record (truncated or damaged)"
        )
    entries, cd_size = struct.unpack_from("<HI", tail, at + 10)
    if entries != 0xFFFF and cd_size != 0xFFFFFFFF:
        return entries, cd_size
    locator = at - 20
    if locator < 0 or tail[locator : locator + 4] != _END64_LOCATOR:
        raise ArchiveError("corrupt", "the ZIP64 end record is missing")
    (record_at,) = struct.unpack_from("<Q", tail, locator + 8)
    file.seek(record_at)
    record = file.read(56)
    if len(record) < 56 or record[:4] != _END64:
        raise ArchiveError("corrupt", "the ZIP64 end record is damaged")
    entries, cd_size = struct.unpack_from("<QQ", record, 32)
    return entries, cd_size


def _check_directory(file: IO[bytes], size: int, limits: ArchiveLimits) -> None:
    entries, cd_size = _end_record(file, size)
    if entries > limits.max_entries:
        raise ArchiveLimitError(
            "max_entries", limits.max_entries, f"the ZIP directory lists {entries} entries"
        )
    most = limits.max_entries * (_RECORD_BYTES + limits.max_path_length)
    if cd_size > most:
        raise ArchiveLimitError(
            "max_entries",
            limits.max_entries,
            f"the ZIP directory is {cd_size} bytes, more than {limits.max_entries} entries need",
        )


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)


def _overlapping(infos: list[zipfile.ZipInfo], directory_at: int) -> set[int]:
    """Entries whose data runs into the next entry's header: the overlapping-entry bomb
    shares one compressed kernel between thousands of directory records."""
    ordered = sorted(infos, key=lambda i: i.header_offset)
    bad: set[int] = set()
    for info, after in zip(
        ordered, [*(i.header_offset for i in ordered[1:]), directory_at], strict=True
    ):
        if info.header_offset + 30 + info.compress_size > after:
            bad.add(id(info))
    return bad


class _ZipStream:
    def __init__(self, member: IO[bytes], info: zipfile.ZipInfo, name: str, budget: Budget):
        self._member = member
        self._info = info
        self._name = name
        self._budget = budget

    def read(self, size: int, /) -> bytes:
        try:
            data = self._member.read(size)
        except _DAMAGE as exc:
            raise EntryError(self._name, "corrupt", f"the entry is damaged: {exc}") from None
        self._budget.add(len(data))
        return data

    def compressed(self) -> int:
        # zipfile reads no more than this for the entry, whatever the data says.
        return self._info.compress_size

    def close(self) -> None:
        self._member.close()


class ZipArchive:
    def __init__(self, file: IO[bytes], limits: ArchiveLimits) -> None:
        self._limits = limits
        size = file.seek(0, 2)
        _check_directory(file, size, limits)
        try:
            self._zip = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as exc:
            raise ArchiveError("corrupt", f"the ZIP archive is damaged: {exc}") from None
        infos = self._zip.infolist()
        files = [i for i in infos if not _is_dir(i)]
        if not files:
            raise ArchiveError("empty", "the archive holds no files")
        self._check_declared(files, size)
        self._overlaps = _overlapping(infos, self._zip.start_dir)
        self._budget = Budget(limits, lambda: size)

    def _check_declared(self, files: list[zipfile.ZipInfo], size: int) -> None:
        limits = self._limits
        total = sum(i.file_size for i in files)
        if total > limits.max_total_bytes:
            raise ArchiveLimitError(
                "max_total_bytes", limits.max_total_bytes, f"its entries declare {total} bytes"
            )
        if total > limits.ratio_floor and total > limits.max_total_ratio * max(size, 1):
            raise ArchiveLimitError(
                "max_total_ratio",
                limits.max_total_ratio,
                f"{size} bytes declare {total} once decompressed (a decompression bomb?)",
            )

    def close(self) -> None:
        self._zip.close()

    def _screen(self, info: zipfile.ZipInfo, seen: set[str]) -> str:
        """The entry's name, or `EntryError` for what its directory record shows."""
        raw, limits = info.filename, self._limits
        name = entry_name(raw, limits)
        unique(name, raw, seen)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise EntryError(name, "link", "the entry is a symbolic link")
        if stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: permissions only, no type
            raise EntryError(name, "special_file", "the entry is a device, FIFO or socket")
        if info.flag_bits & 0x1:
            raise EntryError(name, "encrypted", "the entry is encrypted (password-protected)")
        if info.compress_type not in _METHODS:
            raise EntryError(
                name,
                "unsupported_compression",
                f"the entry uses ZIP compression method {info.compress_type}; "
                "supported: stored, deflate, bzip2, lzma",
            )
        if id(info) in self._overlaps:
            raise EntryError(name, "corrupt", "the entry's data overlaps the next entry")
        if info.file_size > limits.max_entry_bytes:
            raise EntryError(
                name,
                "too_large",
                f"the entry declares {info.file_size} bytes (limit {limits.max_entry_bytes})",
            )
        if info.file_size > limits.ratio_floor and info.file_size > limits.max_entry_ratio * max(
            info.compress_size, 1
        ):
            raise EntryError(
                name,
                "compression_ratio",
                f"the entry declares {info.compress_size} compressed bytes for "
                f"{info.file_size} (limit {limits.max_entry_ratio:g}:1); a decompression bomb?",
            )
        return name

    def _entry(self, info: zipfile.ZipInfo, seen: set[str]) -> ArchiveEntry:
        name = self._screen(info, seen)
        try:
            member = self._zip.open(info)
        except (*_DAMAGE, NotImplementedError, RuntimeError) as exc:
            raise EntryError(name, "corrupt", f"the entry cannot be opened: {exc}") from None
        stream = _ZipStream(member, info, name, self._budget)
        try:
            return ArchiveEntry(name, info.file_size, stream, self._limits)
        except EntryError:
            stream.close()
            raise

    def __iter__(self) -> Iterator[ArchiveEntry | EntryError]:
        seen: set[str] = set()
        for info in self._zip.infolist():
            self._budget.check()
            if _is_dir(info):
                continue
            try:
                entry = self._entry(info, seen)
            except EntryError as exc:
                yield exc
                continue
            try:
                yield entry
            finally:
                entry.close()
        self._budget.check()
