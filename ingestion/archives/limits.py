"""What an archive may hold, and the errors for one that holds more or worse.

Two kinds of error: `ArchiveError` is about the whole archive (it is not one, it is
empty, its stream breaks outside any entry) and `ArchiveLimitError`, one of them,
names the limit it went past so that a caller can answer 413 before any work
starts. `EntryError` is one entry's: it is yielded in the entry's place (or raised
while its bytes are read) and the other entries go on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from ingestion.types import IngestError


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds on one archive. Sizes are uncompressed bytes as counted while reading,
    not as headers declare them (headers are checked too, to refuse early)."""

    # Every member counts, directories included: each costs memory while listed.
    max_entries: int = 10_000
    # The bytes decompressed for the whole archive (for tar, the tar stream itself:
    # skipping an entry of a compressed tar still decompresses it).
    max_total_bytes: int = 4 * 1024**3
    # One entry: the default upload limit (Settings.max_upload_bytes).
    max_entry_bytes: int = 256 * 1024**2
    # Documents compress a few times at most (PDF, EPUB, DOCX are compressed already;
    # text 3-10x); deflate's own ceiling is ~1032:1, which a bomb of zeros reaches.
    max_entry_ratio: float = 100.0
    max_total_ratio: float = 100.0
    # Ratios are judged only past this many bytes: a small file of blanks is no bomb.
    ratio_floor: int = 1024**2
    # UTF-8 bytes of an entry's path, which becomes its custom_id.
    max_path_length: int = 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"ArchiveLimits.{field.name} must be positive")


class ArchiveError(IngestError):
    """The whole archive is refused, or its stream broke outside any entry.

    `code`: ``empty``, ``not_an_archive``, ``corrupt``, ``truncated`` or
    ``too_large`` (an `ArchiveLimitError`).
    """


class ArchiveLimitError(ArchiveError):
    """An archive past one of its `ArchiveLimits`; `limit` is the field's name."""

    def __init__(self, limit: str, value: float, detail: str) -> None:
        super().__init__("too_large", f"the archive exceeds {limit} ({value:g}): {detail}")
        self.limit = limit
        self.value = value


class EntryError(IngestError):
    """One entry refused: `name` as the archive spells it (made printable).

    `code`: ``unsafe_path``, ``path_too_long``, ``duplicate_name``, ``link``,
    ``special_file``, ``encrypted``, ``unsupported_compression``, ``corrupt``,
    ``truncated``, ``too_large``, ``compression_ratio``, ``nested_archive``,
    ``empty`` or ``unsupported_type``.
    """

    def __init__(self, name: str, code: str, reason: str) -> None:
        super().__init__(code, reason)
        self.name = name

    def __str__(self) -> str:
        return f"{self.name}: {self.code}: {self.reason}"


class Budget:
    """The archive-wide count of decompressed bytes, against the total limits.

    A limit hit while a caller reads an entry is raised there and again at the
    iterator's next step, so a caller that catches it cannot go on past it.
    """

    def __init__(self, limits: ArchiveLimits, compressed: Callable[[], int] | None) -> None:
        self._limits = limits
        self._compressed = compressed  # None: nothing is compressed at the archive level
        self.produced = 0
        self.failure: ArchiveLimitError | None = None

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _fail(self, error: ArchiveLimitError) -> None:
        self.failure = error
        raise error

    def at(self, produced: int) -> None:
        """`produced` bytes are out so far."""
        self.produced = produced
        limits = self._limits
        if produced > limits.max_total_bytes:
            self._fail(
                ArchiveLimitError(
                    "max_total_bytes",
                    limits.max_total_bytes,
                    f"more than {limits.max_total_bytes} bytes once decompressed",
                )
            )
        if self._compressed is not None and produced > limits.ratio_floor:
            packed = max(self._compressed(), 1)
            if produced > limits.max_total_ratio * packed:
                self._fail(
                    ArchiveLimitError(
                        "max_total_ratio",
                        limits.max_total_ratio,
                        f"{packed} compressed bytes gave {produced} (a decompression bomb?)",
                    )
                )

    def add(self, count: int) -> None:
        self.at(self.produced + count)

    def expect(self, end: int, name: str) -> None:
        """Refuse up front when a header says the stream reaches `end` bytes."""
        limits = self._limits
        if end > limits.max_total_bytes:
            self._fail(
                ArchiveLimitError(
                    "max_total_bytes",
                    limits.max_total_bytes,
                    f"entry {name!r} would take the archive to {end} bytes",
                )
            )
