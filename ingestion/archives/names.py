"""An entry's path, checked and normalised into the name it is known by (custom_id).

Nothing is extracted, so these rules are not about the file system of this host:
they keep names that would be dangerous anywhere else (a client that does
extract, a Windows share) and names that two entries would share out of results.
A name that needs changing to be safe is refused, never repaired: `../a` is not
quietly `a`.
"""

from __future__ import annotations

import re
import unicodedata

from ingestion.archives.limits import ArchiveLimits, EntryError

_DRIVE = re.compile(r"[A-Za-z]:")
# C0 and C1 controls and DEL: invisible in a results file, and NUL ends C strings.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SHOWN_CHARS = 300


def printable(raw: str) -> str:
    """`raw` as it can be reported: undecodable bytes replaced, the length bounded."""
    text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _unsafe(raw: str, why: str) -> EntryError:
    return EntryError(printable(raw), "unsafe_path", f"the entry's path {why}")


def _why_unsafe(raw: str) -> str | None:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if _CONTROL.search(raw):
        return "contains control characters"
    if "\\" in raw:
        return "contains a backslash, a path separator on Windows"
    if raw.startswith("/"):
        return "is absolute"
    if _DRIVE.match(raw):
        return "starts with a drive letter"
    if ".." in raw.split("/"):
        return "has a '..' component, which would leave the archive's root"
    return None


def entry_name(raw: str, limits: ArchiveLimits) -> str:
    """The normalised name of an entry (NFC, no `.` or empty components).

    Raises `EntryError` (``unsafe_path``, ``path_too_long``) for one that cannot be used.
    """
    why = _why_unsafe(raw)
    if why is not None:
        raise _unsafe(raw, why)
    parts = [part for part in raw.split("/") if part not in ("", ".")]
    if not parts:
        raise _unsafe(raw, "is empty")
    # Composed and decomposed accents look the same to people: one name, not two.
    name = unicodedata.normalize("NFC", "/".join(parts))
    length = len(name.encode("utf-8"))
    if length > limits.max_path_length:
        raise EntryError(
            printable(raw),
            "path_too_long",
            f"the entry's path is {length} bytes long (limit {limits.max_path_length})",
        )
    return name


def unique(name: str, raw: str, seen: set[str]) -> None:
    """Refuse a second entry whose normalised name an earlier one had."""
    if name in seen:
        raise EntryError(
            printable(raw),
            "duplicate_name",
            f"an earlier entry has the same path ({name!r}); an entry's path is its id",
        )
    seen.add(name)
