"""Document archives (zip, tar, tar.gz, tar.bz2, tar.xz), read entry by entry.

Never extracted to disk: entries come one at a time from the archive's own stream,
with their bytes counted as they are decompressed, so a bomb stops at a limit with
bounded memory whatever its headers say. Each entry is an `ArchiveEntry` (its path
in the archive is its custom_id) or an `EntryError` in its place (unsafe path,
link, device, duplicate, encrypted, damaged, too large, an archive inside the
archive, a type that is not a document); the rest go on where the format allows.
"""

from ingestion.archives.entries import ArchiveEntry
from ingestion.archives.limits import ArchiveError, ArchiveLimitError, ArchiveLimits, EntryError
from ingestion.archives.reader import SUPPORTED, Archive, open_archive

__all__ = [
    "SUPPORTED",
    "Archive",
    "ArchiveEntry",
    "ArchiveError",
    "ArchiveLimitError",
    "ArchiveLimits",
    "EntryError",
    "open_archive",
]
