"""Plain text and Markdown, read by us in a stream rather than by PyMuPDF.

PyMuPDF lays a whole text file out as pages at open time, which is neither
bounded nor fast (measured on corpus text/ and huge/): debian-policy.txt
(0.5 MB) 0.5 s / 67 MB RSS; kjv-bible.txt (4.3 MB) 24 s / 136 MB;
python-3.11-docs.concat.txt (12 MB) 209 s / 248 MB, so it grows worse than
linearly; linux-doc-6.1.concat.txt (44 MB) needed 8.3 s and 746 MB just to
open, and extraction was stopped after several minutes. This reader: the
44 MB file gives 10,605 pages, opens in 0.41 s, yields every page in 1.3 s
and peaks at 81 MB RSS (65 MB of it is the interpreter and imports).

Here the file is decoded in 1 MiB chunks and cut into synthetic pages:
  * a form feed ends a page, when the file uses them (printed-page output
    such as RFCs or man pages keeps its own page numbers); pages longer than
    `FORM_FEED_PAGE_CHARS` are still cut, as a guard;
  * otherwise a page ends at the first line break after
    `SYNTHETIC_PAGE_CHARS` (4,000) characters;
  * a line with no break for twice that is cut at a space, or hard.
The cut line break and form feed are not part of either page. Encoding: a
BOM decides (UTF-8, UTF-16); otherwise UTF-8, falling back to cp1252 and
then latin-1 (which never fails) with a ``decoded_*`` warning on every page.
Opening makes two decoding passes (encoding and form feeds, then the page
count); `pages(start)` decodes again from the top and skips to `start`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

from ingestion.documents.pagetext import (
    BLANK_PAGE,
    DECODED_CP1252,
    DECODED_LATIN1,
    SYNTHETIC_PAGE_CHARS,
    clean_text,
    normalize_newlines,
)
from ingestion.documents.parsed import ParsedDocument
from ingestion.types import DocumentInfo, IngestError, PageText

CHUNK_BYTES = 1 << 20
FORM_FEED_PAGE_CHARS = 4 * SYNTHETIC_PAGE_CHARS

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_FALLBACKS = (("utf-8", None), ("cp1252", DECODED_CP1252), ("latin-1", DECODED_LATIN1))


def _chunks(path: Path, encoding: str) -> Iterator[str]:
    """Decoded text with LF line ends; a CR at a chunk's end waits for the next."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    carry = ""
    with path.open("rb") as f:
        while True:
            data = f.read(CHUNK_BYTES)
            text = carry + decoder.decode(data, final=not data)
            carry = ""
            if data and text.endswith("\r"):
                text, carry = text[:-1], "\r"
            if text:
                yield normalize_newlines(text)
            if not data:
                return


def _cut(buf: str, use_ff: bool, final: bool) -> tuple[list[str], str]:
    """Complete pages at the front of `buf`, and the rest to carry over."""
    soft = FORM_FEED_PAGE_CHARS if use_ff else SYNTHETIC_PAGE_CHARS
    hard = 2 * soft
    pages: list[str] = []
    pos, n = 0, len(buf)
    while pos < n:
        ff = buf.find("\f", pos, pos + hard) if use_ff else -1
        nl = buf.find("\n", pos + soft, ff if ff != -1 else pos + hard)
        if nl != -1:
            pages.append(buf[pos:nl])
            pos = nl + 1
        elif ff != -1:
            pages.append(buf[pos:ff])
            pos = ff + 1
        elif n - pos >= hard:
            space = buf.rfind(" ", pos + soft, pos + hard)
            end = space + 1 if space != -1 else pos + hard
            pages.append(buf[pos:end])
            pos = end
        else:
            break
    rest = buf[pos:]
    if final and rest:
        pages.append(rest)
        rest = ""
    return pages, rest


def _raw_pages(path: Path, encoding: str, use_ff: bool) -> Iterator[str]:
    rest = ""
    for chunk in _chunks(path, encoding):
        pages, rest = _cut(rest + chunk, use_ff, final=False)
        yield from pages
    pages, _ = _cut(rest, use_ff, final=True)
    yield from pages


def _bom_encoding(path: Path) -> str | None:
    with path.open("rb") as f:
        head = f.read(4)
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    return None


def _survey(path: Path) -> tuple[str, str | None, bool, bool]:
    """(encoding, warning, has form feeds, has any visible text) in one pass."""
    bom = _bom_encoding(path)
    candidates = ((bom, None),) if bom else _FALLBACKS
    for encoding, warning in candidates:
        try:
            has_ff = has_text = False
            for chunk in _chunks(path, encoding):
                has_ff = has_ff or "\f" in chunk
                has_text = has_text or bool(clean_text(chunk).strip())
            return encoding, warning, has_ff, has_text
        except UnicodeDecodeError:
            continue
    raise IngestError("corrupt", "the text cannot be decoded")  # pragma: no cover


class TextDocument(ParsedDocument):
    def __init__(self, path: Path, media_type: str, *, max_pages: int) -> None:
        if path.stat().st_size == 0:
            raise IngestError("empty", "the file is empty (0 bytes)")
        self._path = path
        try:
            self._encoding, warning, self._use_ff, has_text = _survey(path)
        except UnicodeDecodeError as exc:
            raise IngestError("corrupt", f"the text cannot be decoded: {exc}") from exc
        if not has_text:
            raise IngestError("empty", "the file contains only whitespace")
        self._warnings: tuple[str, ...] = (warning,) if warning else ()
        count = 0
        for _ in _raw_pages(path, self._encoding, self._use_ff):
            count += 1
            if count > max_pages:
                raise IngestError(
                    "too_many_pages",
                    f"the text makes more than {max_pages} pages of about "
                    f"{SYNTHETIC_PAGE_CHARS} characters (the limit)",
                )
        self.info = DocumentInfo(media_type=media_type, page_count=count)

    def _pages(self, start: int) -> Iterator[PageText]:
        raw = _raw_pages(self._path, self._encoding, self._use_ff)
        for number, page in enumerate(raw, start=1):
            if number < start:
                continue
            text = clean_text(page)
            warnings = self._warnings if text.strip() else (*self._warnings, BLANK_PAGE)
            yield PageText(number=number, text=text, warnings=warnings)
