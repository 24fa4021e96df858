"""Hostile DOCX files, written by streaming into the ZIP so that building a
200 MiB ``document.xml`` costs the builder almost no memory.

Used by the tests and by bench/docx_parse.py. The packages are minimal but valid:
python-docx opens them too, so the old parser can be measured on them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_CONTENT_TYPES = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    b'<Default Extension="rels" ContentType="application/'
    b'vnd.openxmlformats-package.relationships+xml"/>'
    b'<Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/word/document.xml" ContentType="application/'
    b'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
    b"</Types>"
)
_RELS = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    b'<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships/officeDocument" Target="word/document.xml"/>'
    b"</Relationships>"
)
_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
    b"<w:body>"
)
_TAIL = b"</w:body></w:document>"
_BATCH = 2000


def paragraph(text: str) -> bytes:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>".encode()


def write_docx(path: Path, body: Iterable[bytes], tail: bytes = _TAIL) -> Path:
    """A DOCX whose body is the concatenated `body` chunks, streamed into the ZIP."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", _CONTENT_TYPES)
        zf.writestr("_rels/.rels", _RELS)
        with zf.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(_HEAD)
            for chunk in body:
                member.write(chunk)
            member.write(tail)
    return path


def empty_paragraphs(count: int, first: str = "first", last: str = "last") -> Iterator[bytes]:
    """A text paragraph, `count` empty ones, a text paragraph (the quadratic case)."""
    yield paragraph(first)
    for start in range(0, count, _BATCH):
        yield b"<w:p/>" * min(_BATCH, count - start)
    yield paragraph(last)


def page_breaks(pages: int) -> Iterator[bytes]:
    """`pages` pages of one line each, separated by Word page breaks."""
    brk = b'<w:p><w:r><w:br w:type="page"/></w:r></w:p>'
    for start in range(0, pages, _BATCH):
        yield b"".join(
            paragraph(f"page {n}") + brk for n in range(start + 1, min(start + _BATCH, pages) + 1)
        )


def big_body(count: int) -> Iterator[bytes]:
    """`count` formatted paragraphs "para N" (~150 bytes each): mostly markup, little text.

    The numbers keep deflate well under the ZIP-bomb ratio guard (500:1).
    """
    for start in range(0, count, _BATCH):
        yield b"".join(
            b'<w:p><w:pPr><w:spacing w:after="0"/><w:jc w:val="both"/></w:pPr>'
            b'<w:r><w:rPr><w:b/><w:sz w:val="%d"/></w:rPr><w:t>para %d</w:t></w:r></w:p>'
            % (18 + n % 7, n)
            for n in range(start, min(start + _BATCH, count))
        )


def in_text_box(body: Iterable[bytes]) -> Iterator[bytes]:
    """One paragraph, "anchor", whose text box holds all of `body`."""
    yield b"<w:p><w:r><w:t>anchor</w:t></w:r><w:r><w:drawing><w:txbxContent>"
    yield from body
    yield b"</w:txbxContent></w:drawing></w:r></w:p>"
