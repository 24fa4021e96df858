"""Deciding what an upload is, from its first bytes and then its name.

Magic bytes win over the file name: a PDF called ``notes.txt`` is a PDF, and a
renamed PNG is refused however it is called. The name only settles what the
bytes cannot: Markdown versus plain text, or a ZIP whose first local headers
do not name its type (``detect_media_type_path`` then reads the central
directory instead). Everything else is refused with ``unsupported_type`` and a
reason that lists what is supported.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from ingestion.documents import zipsniff
from ingestion.types import IngestError

PDF = "application/pdf"
EPUB = zipsniff.EPUB
XPS = zipsniff.XPS
FB2 = "application/x-fictionbook+xml"
MOBI = "application/x-mobipocket-ebook"
CBZ = zipsniff.CBZ
DOCX = zipsniff.DOCX
TEXT = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"

SUPPORTED_MEDIA_TYPES: dict[str, str] = {
    PDF: "PDF",
    EPUB: "EPUB",
    XPS: "XPS",
    FB2: "FictionBook (FB2)",
    MOBI: "Mobipocket (MOBI)",
    CBZ: "comic book archive (CBZ)",
    DOCX: "Word (DOCX)",
    TEXT: "plain text",
    MARKDOWN: "Markdown",
    HTML: "HTML",
}

TEXT_MEDIA_TYPES = frozenset({TEXT, MARKDOWN})
ZIP_MEDIA_TYPES = frozenset({EPUB, XPS, CBZ, DOCX})

# Enough for every magic number and for a ZIP's first local headers.
HEAD_BYTES = 8192

_EXTENSIONS: dict[str, str] = {
    ".pdf": PDF,
    ".epub": EPUB,
    ".xps": XPS,
    ".oxps": XPS,
    ".fb2": FB2,
    ".mobi": MOBI,
    ".azw": MOBI,
    ".azw3": MOBI,
    ".cbz": CBZ,
    ".docx": DOCX,
    ".txt": TEXT,
    ".text": TEXT,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
}

# (magic, offset, description): refused formats that are common by mistake.
_REFUSED_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image"),
    (b"\xff\xd8\xff", 0, "a JPEG image"),
    (b"GIF87a", 0, "a GIF image"),
    (b"GIF89a", 0, "a GIF image"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
    (b"\x00\x00\x00\x0cjP  ", 0, "a JPEG 2000 image"),
    (b"ftypheic", 4, "a HEIC image"),
    (b"ftypavif", 4, "an AVIF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", 0, "a legacy Microsoft Office file (.doc/.xls/.ppt)"),
    (b"{\\rtf", 0, "an RTF document"),
    (b"%!PS", 0, "a PostScript file"),
    (b"AT&TFORM", 0, "a DjVu document"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"BZh", 0, "a bzip2 archive"),
    (b"\xfd7zXZ\x00", 0, "an xz archive"),
    (b"(\xb5/\xfd", 0, "a zstd archive"),
    (b"7z\xbc\xaf'\x1c", 0, "a 7-Zip archive"),
    (b"Rar!\x1a\x07", 0, "a RAR archive"),
    (b"PK\x05\x06", 0, "an empty ZIP archive"),
    (b"\x7fELF", 0, "an executable"),
    (b"\x00\x00\xfe\xff", 0, "UTF-32 text"),
    (b"\xff\xfe\x00\x00", 0, "UTF-32 text"),
)

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# Bytes that never occur in text: C0 controls other than \t \n \v \f \r and ESC.
_CONTROL = frozenset(range(32)) - {9, 10, 11, 12, 13, 27}


def supported_list() -> str:
    return ", ".join(SUPPORTED_MEDIA_TYPES.values())


def unsupported(what: str) -> IngestError:
    return IngestError("unsupported_type", f"this is {what}; supported formats: {supported_list()}")


def _extension_type(filename: str | None) -> str | None:
    if not filename:
        return None
    return _EXTENSIONS.get(PurePath(filename).suffix.lower())


def _looks_binary(head: bytes) -> bool:
    if head.startswith(_BOMS[1:]):
        return False  # UTF-16 text is full of NULs by design
    nuls = head.count(0)
    controls = sum(1 for b in head if b in _CONTROL)
    # A stray NUL or control byte happens in real text files; binaries have many.
    return nuls > max(2, len(head) // 100) or controls > max(8, len(head) // 20)


def _markup_type(head: bytes) -> str | None:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1024].lower()
    if not start.startswith(b"<"):
        return None
    window = head[:4096].lower()
    if b"<fictionbook" in window:
        return FB2
    if start.startswith((b"<!doctype html", b"<html")) or b"<html" in window:
        return HTML
    if start.startswith(b"<svg") or b"<svg" in window:
        raise unsupported("an SVG image")
    return None


def _text_type(head: bytes, filename: str | None) -> str:
    if _looks_binary(head):
        raise unsupported("a binary file")
    ext = _extension_type(filename)
    markup = None if head.startswith(_BOMS[1:]) else _markup_type(head)
    if markup is not None:
        return markup
    if ext in (MARKDOWN, HTML):
        return ext
    return TEXT


def _sniff(head: bytes, filename: str | None) -> str | None:
    """The media type from magic bytes; None means "a ZIP, look inside"."""
    if not head:
        raise IngestError("empty", "the file is empty (0 bytes)")
    if b"%PDF-" in head[:1024]:
        return PDF
    if head.startswith(b"PK\x03\x04"):
        return None
    if head[60:68] == b"BOOKMOBI":
        return MOBI
    for magic, offset, what in _REFUSED_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            raise unsupported(what)
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":
        raise unsupported("a BMP image")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        raise unsupported("a WebP image")
    if head.startswith(b"MZ") and _looks_binary(head):
        raise unsupported("an executable")
    return _text_type(head, filename)


def _zip_result(kind: zipsniff.ZipKind) -> str:
    if kind.media_type is None:
        raise unsupported(kind.description)
    return kind.media_type


def detect_media_type(head: bytes, filename: str | None) -> str:
    """Media type of an upload from its first bytes (`head`, a few KiB) and name.

    For ZIP containers only the local headers inside `head` are seen; when they
    do not tell, a ZIP-based extension is believed. Use
    `detect_media_type_path` when the file is on disk.
    """
    sniffed = _sniff(head, filename)
    if sniffed is not None:
        return sniffed
    kind = zipsniff.kind_from_head(head)
    if kind is not None:
        return _zip_result(kind)
    ext = _extension_type(filename)
    if ext in ZIP_MEDIA_TYPES:
        return ext
    raise unsupported("a ZIP archive whose contents could not be identified")


def detect_media_type_path(path: Path, filename: str | None = None) -> str:
    """Like `detect_media_type`, but ZIP containers are judged by their central directory.

    `filename` is the name the user gave (the path may be a temporary file);
    it defaults to the path's own name.
    """
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    sniffed = _sniff(head, filename if filename is not None else path.name)
    if sniffed is not None:
        return sniffed
    return _zip_result(zipsniff.kind_from_path(path))
