"""Format detection on real corpus files and on crafted containers."""

from __future__ import annotations

import io
import random
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestion.documents import formats, zipsniff
from ingestion.documents.formats import (
    HEAD_BYTES,
    SUPPORTED_MEDIA_TYPES,
    detect_media_type,
    detect_media_type_path,
)
from ingestion.types import IngestError

CorpusFile = Callable[[str], Path]


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(HEAD_BYTES)


def _unsupported(call: Callable[[], str]) -> IngestError:
    with pytest.raises(IngestError) as info:
        call()
    assert info.value.code == "unsupported_type", info.value
    # The reason must tell the user what would have worked.
    assert "supported formats: PDF, EPUB" in info.value.reason
    return info.value


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("pdf/latex-ltnews01.pdf", formats.PDF),
        ("pdf-problem/ocrmypdf-invalid.pdf", formats.PDF),  # claims %PDF; parse says corrupt
        ("epub/live-manual.de.epub", formats.EPUB),
        ("epub/debian-policy.epub", formats.EPUB),  # no leading mimetype member
        ("docx/mammoth-tables.docx", formats.DOCX),
        ("docx/mammoth-utf8-bom.docx", formats.DOCX),  # word/ first, no [Content_Types] first
        ("html/debian-handbook.advanced-administration.en.html", formats.HTML),
        ("text/debian-policy.txt", formats.TEXT),
    ],
)
def test_detects_real_files(corpus_file: CorpusFile, relative: str, expected: str) -> None:
    path = corpus_file(relative)
    assert detect_media_type_path(path) == expected
    assert detect_media_type(_head(path), path.name) == expected
    assert expected in SUPPORTED_MEDIA_TYPES


def test_magic_beats_extension(corpus_file: CorpusFile) -> None:
    pdf = _head(corpus_file("pdf/latex-ltnews01.pdf"))
    assert detect_media_type(pdf, "notes.txt") == formats.PDF
    epub = _head(corpus_file("epub/live-manual.en.epub"))
    assert detect_media_type(epub, "book.docx") == formats.EPUB


def test_extension_decides_within_text() -> None:
    text = b"# Title\n\nSome *Markdown* text.\n"
    assert detect_media_type(text, "README.md") == formats.MARKDOWN
    assert detect_media_type(text, "README.txt") == formats.TEXT
    assert detect_media_type(text, None) == formats.TEXT
    assert detect_media_type(b"<!DOCTYPE html><html><p>x</p></html>", None) == formats.HTML
    assert detect_media_type(b"  <HTML lang=en><body>x", "page.txt") == formats.HTML


def test_fictionbook_and_mobi_by_magic() -> None:
    fb2 = b'<?xml version="1.0"?>\n<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0">'
    assert detect_media_type(fb2, None) == formats.FB2
    mobi = b"Some Book".ljust(60, b"\x00") + b"BOOKMOBI" + bytes(200)
    assert detect_media_type(mobi, None) == formats.MOBI


def test_zero_bytes_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    calls: list[Callable[[], str]] = [
        lambda: detect_media_type(b"", "x.pdf"),
        lambda: detect_media_type_path(empty),
    ]
    for call in calls:
        with pytest.raises(IngestError) as info:
            call()
        assert info.value.code == "empty"


def test_odt_is_refused(corpus_file: CorpusFile) -> None:
    path = corpus_file("odt/live-manual.en.odt")
    error = _unsupported(lambda: detect_media_type_path(path))
    assert "OpenDocument text" in error.reason
    _unsupported(lambda: detect_media_type(_head(path), path.name))


def test_ooxml_strict_docx_is_refused(corpus_file: CorpusFile) -> None:
    error = _unsupported(
        lambda: detect_media_type_path(corpus_file("docx/mammoth-strict-format.docx"))
    )
    assert "Strict" in error.reason


def test_real_png_is_refused(corpus_file: CorpusFile) -> None:
    with zipfile.ZipFile(corpus_file("epub/debian-policy.epub")) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".png"))
        png = zf.read(name)
    error = _unsupported(lambda: detect_media_type(png[:HEAD_BYTES], "scan.pdf"))
    assert "PNG image" in error.reason


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG image"),
        (b"GIF89a\x01\x00", "GIF image"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(50), "legacy Microsoft Office"),
        (b"{\\rtf1\\ansi hello}", "RTF"),
        (b"\x1f\x8b\x08\x00" + bytes(20), "gzip"),
        (b"\x7fELF\x02\x01\x01" + bytes(50), "executable"),
        (b"PK\x05\x06" + bytes(18), "empty ZIP"),
    ],
)
def test_refused_magic(head: bytes, what: str) -> None:
    assert what in _unsupported(lambda: detect_media_type(head, "document.pdf")).reason


def test_random_binary_is_refused() -> None:
    blob = random.Random(7).randbytes(HEAD_BYTES)
    assert "binary" in _unsupported(lambda: detect_media_type(blob, "data.txt")).reason


def test_nul_heavy_text_is_binary_but_stray_nul_is_not() -> None:
    text = b"plain words and more words\n" * 100
    assert detect_media_type(text[:500] + b"\x00" + text[500:], "a.txt") == formats.TEXT
    heavy = b"a\x00b\x00c\x00" * 300
    _unsupported(lambda: detect_media_type(heavy, "a.txt"))


def test_utf16_with_bom_is_text() -> None:
    head = "Grüße aus Köln\n".encode("utf-16")
    assert head.count(0) > 5
    assert detect_media_type(head, "letter.txt") == formats.TEXT


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_zip_packages_by_central_directory(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    cbz = _zip(tmp_path / "comic.bin", {"001.png": png, "002.jpg": png, "ComicInfo.xml": b"<x/>"})
    assert detect_media_type_path(cbz) == formats.CBZ
    xps = _zip(tmp_path / "a.zip", {"FixedDocumentSequence.fdseq": b"<x/>", "Documents/1/x": b""})
    assert detect_media_type_path(xps) == formats.XPS
    xlsx = _zip(tmp_path / "b.zip", {"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<x/>"})
    assert "Excel" in _unsupported(lambda: detect_media_type_path(xlsx)).reason
    plain = _zip(tmp_path / "c.zip", {"src/main.py": b"print(1)", "001.png": png})
    assert "ZIP archive" in _unsupported(lambda: detect_media_type_path(plain)).reason


def test_inconclusive_zip_head_falls_back_to_extension() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("_rels/.rels", random.Random(1).randbytes(HEAD_BYTES * 2))
        zf.writestr("word/document.xml", b"<w:document/>")
    head = buf.getvalue()[:HEAD_BYTES]
    assert detect_media_type(head, "report.docx") == formats.DOCX
    _unsupported(lambda: detect_media_type(head, "archive.zip"))


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    bomb = _zip(tmp_path / "bomb.epub", {"mimetype": b"application/epub+zip", "x": bytes(20 << 20)})
    with pytest.raises(IngestError) as info:
        detect_media_type_path(bomb)
    assert info.value.code == "too_large"


def test_absurd_entry_count_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    many = _zip(tmp_path / "many.cbz", {f"{i:03}.png": b"\x89PNG" for i in range(30)})
    assert detect_media_type_path(many) == formats.CBZ
    monkeypatch.setattr(zipsniff, "MAX_ENTRIES", 29)
    with pytest.raises(IngestError) as info:
        detect_media_type_path(many)
    assert info.value.code == "too_large"
    assert "30 members" in info.value.reason


def test_truncated_zip_is_corrupt(corpus_file: CorpusFile, tmp_path: Path) -> None:
    data = corpus_file("epub/live-manual.en.epub").read_bytes()
    cut = tmp_path / "cut.epub"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError) as info:
        detect_media_type_path(cut)
    assert info.value.code == "corrupt"
