"""Telling ZIP-based formats apart (EPUB, DOCX, XPS, CBZ, OpenDocument, ...).

Many document formats are ZIP containers, and MuPDF happily "opens" any ZIP as
an image archive with blank pages, so the container's members decide the type.
Two views are offered: the local file headers that fit in the first few KiB of
an upload, which may be inconclusive, and the central directory of a file on
disk, which is authoritative. Before trusting the central directory, its size
and entry count are checked from the end-of-central-directory record so that
a crafted archive cannot make us allocate millions of entries or decompress
gigabytes later on.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ingestion.types import IngestError

EPUB = "application/epub+zip"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XPS = "application/vnd.ms-xpsdocument"
CBZ = "application/vnd.comicbook+zip"

# Generous for real books and comics (an EPUB has hundreds of members, a CBZ a
# few thousand), small enough that listing them costs a few MB at most.
MAX_ENTRIES = 20_000
MAX_CENTRAL_DIRECTORY = 8 * 1024 * 1024
MAX_UNCOMPRESSED_TOTAL = 2 * 1024**3
# Deflate cannot beat ~1032:1; real XML and images stay far below 200:1.
MAX_RATIO = 500
RATIO_FLOOR = 16 * 1024 * 1024
MEMBER_READ_LIMIT = 64 * 1024
# DOCX parts are streamed (see docx_stream): the reader's memory does not grow
# with them and it never decompresses media, so this guard bounds time instead.
# Dense markup parses at ~11 MB/s of CPU (bench/docx_parse.py): 1 GiB of XML and
# relationship parts is ~100 s, inside the ingest soft time limit on a busy core.
MAX_DOCX_XML = 1024**3

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".jp2")
_IGNORED_IN_CBZ = ("comicinfo.xml", "thumbs.db", ".ds_store")
_ODF_NAMES = {
    "text": "an OpenDocument text (ODT) file",
    "spreadsheet": "an OpenDocument spreadsheet (ODS) file",
    "presentation": "an OpenDocument presentation (ODP) file",
    "graphics": "an OpenDocument drawing (ODG) file",
}
_STRICT_MARK = b"purl.oclc.org/ooxml/"


@dataclass(frozen=True, slots=True)
class ZipKind:
    """What a ZIP holds: a supported `media_type`, or None and a `description`."""

    media_type: str | None
    description: str


def _mimetype_kind(mimetype: bytes) -> ZipKind:
    value = mimetype.strip().decode("ascii", "replace")
    if value == EPUB:
        return ZipKind(EPUB, "an EPUB book")
    prefix = "application/vnd.oasis.opendocument."
    if value.startswith(prefix):
        sub = value[len(prefix) :]
        return ZipKind(None, _ODF_NAMES.get(sub, f"an OpenDocument file ({sub})"))
    return ZipKind(None, f"a ZIP package of type {value!r}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


def _cbz_relevant(name: str) -> bool:
    lower = name.lower()
    base = lower.rsplit("/", 1)[-1]
    return not (
        lower.endswith("/")
        or lower.startswith("__macosx/")
        or base in _IGNORED_IN_CBZ
        or base.endswith((".txt", ".nfo", ".sfv"))
    )


def classify_names(names: Iterable[str], mimetype: bytes | None, complete: bool) -> ZipKind | None:
    """Classify from member names; None when an incomplete listing is not enough."""
    listed = list(names)
    if mimetype is not None:
        return _mimetype_kind(mimetype)
    lowered = [n.lower() for n in listed]
    if any(n.endswith((".fdseq", ".fpage", ".fdoc")) for n in lowered):
        return ZipKind(XPS, "an XPS document")
    if any(n.startswith("word/") for n in lowered):
        return ZipKind(DOCX, "a Word document")
    if any(n.startswith("xl/") for n in lowered):
        return ZipKind(None, "an Excel workbook (XLSX)")
    if any(n.startswith("ppt/") for n in lowered):
        return ZipKind(None, "a PowerPoint presentation (PPTX)")
    if "meta-inf/manifest.xml" in lowered and "content.xml" in lowered:
        return ZipKind(None, "an OpenDocument file (ODT/ODS/ODP)")
    if "meta-inf/container.xml" in lowered and (
        not complete or any(n.endswith(".opf") for n in lowered)
    ):
        return ZipKind(EPUB, "an EPUB book")
    relevant = [n for n in listed if _cbz_relevant(n)]
    if relevant and all(_is_image(n) for n in relevant):
        return ZipKind(CBZ, "a comic book archive") if complete else None
    if complete:
        return ZipKind(None, "a ZIP archive that is not a supported document package")
    return None


def kind_from_head(head: bytes) -> ZipKind | None:
    """Walk the local file headers that fit in `head`; None if inconclusive."""
    names: list[str] = []
    mimetype: bytes | None = None
    pos = 0
    while pos + 30 <= len(head) and head[pos : pos + 4] == b"PK\x03\x04":
        flags, method = struct.unpack_from("<HH", head, pos + 6)
        csize, _usize, nlen, xlen = struct.unpack_from("<IIHH", head, pos + 18)
        name_end = pos + 30 + nlen
        if name_end > len(head):
            break
        name = head[pos + 30 : name_end].decode("utf-8", "replace")
        data = name_end + xlen
        if name == "mimetype" and method == zipfile.ZIP_STORED:
            mimetype = head[data : data + min(csize, 200)]
        names.append(name)
        if flags & 0x08:
            # Sizes live in a trailing data descriptor: the next header cannot be found.
            break
        pos = data + csize
    if not names:
        return None
    return classify_names(names, mimetype, complete=False)


def _check_end_record(path: Path) -> None:
    """Refuse archives whose central directory is absurdly large, before listing it."""
    size = path.stat().st_size
    with path.open("rb") as f:
        tail_len = min(size, 22 + 65535)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + 22 > len(tail):
            raise IngestError("corrupt", "the ZIP container has no end-of-directory record")
        entries, cd_size = struct.unpack_from("<HI", tail, at + 10)
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
            # ZIP64: the real numbers sit in a record named by the locator just before.
            loc = at - 20
            if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
                raise IngestError("corrupt", "the ZIP64 container is malformed")
            (rec_off,) = struct.unpack_from("<Q", tail, loc + 8)
            f.seek(rec_off)
            rec = f.read(56)
            if len(rec) < 56 or rec[:4] != b"PK\x06\x06":
                raise IngestError("corrupt", "the ZIP64 container is malformed")
            entries, cd_size = struct.unpack_from("<QQ", rec, 32)
    if entries > MAX_ENTRIES or cd_size > MAX_CENTRAL_DIRECTORY:
        raise IngestError(
            "too_large",
            f"the ZIP container lists {entries} members (limit {MAX_ENTRIES}); "
            "this is not a plausible document",
        )


def _check_sizes(infos: list[zipfile.ZipInfo]) -> None:
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise IngestError(
                "too_large",
                f"ZIP member {info.filename!r} expands {info.compress_size} bytes to "
                f"{info.file_size} (a ZIP bomb?)",
            )
    if total > MAX_UNCOMPRESSED_TOTAL:
        raise IngestError(
            "too_large", f"the ZIP container would expand to {total} bytes; refusing to unpack it"
        )


def _check_docx_parts(infos: list[zipfile.ZipInfo]) -> None:
    parts = sum(i.file_size for i in infos if i.filename.lower().endswith((".xml", ".rels")))
    if parts > MAX_DOCX_XML:
        raise IngestError(
            "too_large",
            f"the Word document's XML parts expand to {parts} bytes (limit {MAX_DOCX_XML})",
        )


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as member:
        return member.read(MEMBER_READ_LIMIT)


def kind_from_path(path: Path) -> ZipKind:
    """Classify a ZIP file on disk from its central directory."""
    _check_end_record(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_sizes(infos)
            mimetype = None
            # The spec wants it first and stored; repackaged real files ignore that.
            for info in infos:
                if info.filename == "mimetype":
                    mimetype = _read_member(zf, info)
                    break
            kind = classify_names((i.filename for i in infos), mimetype, complete=True)
            if kind is None:  # pragma: no cover - complete listings always decide
                raise AssertionError("unclassified ZIP")
            if kind.media_type == DOCX and _is_strict_ooxml(zf):
                return ZipKind(
                    None,
                    "a Word document in the OOXML Strict variant; re-save it as a "
                    "standard (Transitional) .docx",
                )
            if kind.media_type == DOCX:
                _check_docx_parts(infos)
            return kind
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise IngestError("corrupt", f"the ZIP container is damaged: {exc}") from exc
    except NotImplementedError as exc:
        raise IngestError("unsupported_type", f"the ZIP container uses {exc}") from exc


def _is_strict_ooxml(zf: zipfile.ZipFile) -> bool:
    try:
        info = zf.getinfo("_rels/.rels")
    except KeyError:
        return False
    return _STRICT_MARK in _read_member(zf, info)


def is_strict_ooxml(path: Path) -> bool:
    """True for an OOXML Strict package, which python-docx and MuPDF cannot open."""
    try:
        with zipfile.ZipFile(path) as zf:
            return _is_strict_ooxml(zf)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False
