"""Opening an archive: what it is from its first bytes, and the checks made up front."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from ingestion.archives.entries import ZIP_MAGIC, ArchiveEntry, compressed_kind, is_tar
from ingestion.archives.limits import ArchiveError, ArchiveLimits, EntryError
from ingestion.archives.tarread import TarArchive
from ingestion.archives.zipread import ZipArchive
from ingestion.documents import formats, zipsniff
from ingestion.types import IngestError

SUPPORTED = "zip, tar, tar.gz, tar.bz2, tar.xz"


def _not_an_archive(what: str) -> ArchiveError:
    return ArchiveError("not_an_archive", f"this is {what}, not an archive; supported: {SUPPORTED}")


def _describe(head: bytes, filename: str | None) -> str:
    try:
        media_type = formats.detect_media_type(head, filename)
    except IngestError:
        return "not a file of a known kind"
    return f"a document ({formats.SUPPORTED_MEDIA_TYPES[media_type]})"


def _head(file: IO[bytes]) -> tuple[bytes, bool]:
    """The first bytes, and whether they were put back (a seekable file)."""
    seekable = file.seekable()
    start = file.tell() if seekable else 0
    head = file.read(formats.HEAD_BYTES)
    if seekable:
        file.seek(start)
    return head, seekable


class Archive:
    """An open archive; iterate it for its entries (`ArchiveEntry`) and refusals
    (`EntryError`) in archive order. Iterating may raise `ArchiveError` (the stream
    broke between entries) or `ArchiveLimitError`; what came before stays valid."""

    def __init__(self, file: IO[bytes], limits: ArchiveLimits, filename: str | None) -> None:
        head, seekable = _head(file)
        if not head:
            raise ArchiveError("empty", "the file is empty (0 bytes)")
        if head[:1024] == bytes(1024):
            # What tar writes for no members: its end marker alone.
            raise ArchiveError("empty", "the archive holds no files (an empty tar)")
        self._reader: ZipArchive | TarArchive
        if head.startswith(ZIP_MAGIC):
            kind = zipsniff.kind_from_head(head)
            if kind is not None and kind.media_type is not None:
                raise _not_an_archive(kind.description)
            if not seekable:
                raise ValueError("a ZIP archive is read from a seekable file")
            self.kind = "zip"
            self._reader = ZipArchive(file, limits)
            return
        prefix = b"" if seekable else head
        if is_tar(head):
            self.kind = "tar"
            self._reader = TarArchive(file, limits, None, prefix)
            return
        found = compressed_kind(head)
        if found is None:
            raise _not_an_archive(_describe(head, filename))
        what, compression = found
        if compression is None:
            raise _not_an_archive(what)
        self.kind = f"tar.{compression}"
        self._reader = TarArchive(file, limits, compression, prefix)

    def __iter__(self) -> Iterator[ArchiveEntry | EntryError]:
        return iter(self._reader)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _OwnedArchive(Archive):
    """An archive opened from a path: its file is closed with it."""

    def __init__(self, path: Path, limits: ArchiveLimits, filename: str | None) -> None:
        self._file = path.open("rb")
        try:
            super().__init__(self._file, limits, filename)
        except BaseException:
            self._file.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._file.close()


def open_archive(
    source: Path | IO[bytes],
    limits: ArchiveLimits | None = None,
    *,
    filename: str | None = None,
) -> Archive:
    """Open a zip, tar, tar.gz, tar.bz2 or tar.xz archive from a path or a binary file.

    Raises `ArchiveError` for what is refused before any entry is read: not an
    archive, empty, damaged, or (`ArchiveLimitError`) over a limit found up front.
    A ZIP needs a seekable file; a tar is read forward only. `filename` is the name
    the client gave, to describe a file that is not an archive.
    """
    limits = limits or ArchiveLimits()
    if isinstance(source, Path):
        return _OwnedArchive(source, limits, filename or source.name)
    return Archive(source, limits, filename)
