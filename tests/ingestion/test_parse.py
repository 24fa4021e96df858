"""Parsing real documents: content, metadata, warnings and every refusal code."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docx as _docx
import pymupdf as _pymupdf
import pytest

from ingestion.documents import formats, mupdf_doc
from ingestion.documents.formats import detect_media_type_path
from ingestion.documents.pagetext import (
    BLANK_PAGE,
    DECODED_CP1252,
    DECODED_LATIN1,
    NO_TEXT_LAYER,
    REPAIRED,
    SYNTHETIC_PAGE_CHARS,
    UNMAPPED_GLYPHS,
)
from ingestion.documents.parse import open_document
from ingestion.types import IngestError, PageText

CorpusFile = Callable[[str], Path]
# Both libraries are unannotated; strict mypy refuses calls into them otherwise.
docx: Any = _docx
pymupdf: Any = _pymupdf
BIG = 100_000
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


def _all_pages(path: Path, media_type: str | None = None, max_pages: int = BIG) -> list[PageText]:
    with open_document(path, media_type or detect_media_type_path(path), max_pages=max_pages) as d:
        pages = list(d.pages())
        assert len(pages) == d.info.page_count
        return pages


def _error(path: Path, media_type: str, max_pages: int = BIG) -> IngestError:
    with pytest.raises(IngestError) as info:
        open_document(path, media_type, max_pages=max_pages)
    return info.value


def _script_share(text: str, *prefixes: str) -> float:
    letters = [c for c in text if c.isalpha()]
    named = [c for c in letters if unicodedata.name(c, "").startswith(prefixes)]
    return len(named) / max(len(letters), 1)


# --- refusals ---------------------------------------------------------------------------


def test_non_pdf_44_bytes_is_corrupt(corpus_file: CorpusFile) -> None:
    path = corpus_file("pdf-problem/ocrmypdf-invalid.pdf")
    assert path.stat().st_size == 44
    assert _error(path, formats.PDF).code == "corrupt"


def test_truncated_pdf(corpus_file: CorpusFile, tmp_path: Path) -> None:
    data = corpus_file("pdf/r-intro.pdf").read_bytes()
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(data[: len(data) // 2])
    # MuPDF repairs it but finds no page tree: damaged, not "empty".
    assert _error(cut, formats.PDF).code == "corrupt"
    # Losing only the trailer is repairable: every page, each flagged.
    cut.write_bytes(data[:-600])
    pages = _all_pages(cut, formats.PDF)
    assert len(pages) == 113
    assert all(REPAIRED in p.warnings for p in pages)
    assert "An Introduction to R" in pages[0].text


def test_aes256_needs_password(corpus_file: CorpusFile) -> None:
    error = _error(corpus_file("pdf-encrypted/pikepdf-graph-encrypted.pdf"), formats.PDF)
    assert error.code == "encrypted"


def test_aes128_with_empty_password_parses(corpus_file: CorpusFile) -> None:
    path = corpus_file("pdf-encrypted/us-dd-form-0293.pdf")
    with open_document(path, formats.PDF, max_pages=BIG) as d:
        assert d.info.page_count == 4
        assert d.info.language == "en"  # from the catalog's /Lang
        assert d.info.title is not None and "DD Form 293" in d.info.title
        text = "".join(p.text for p in d.pages())
    assert "DISCHARGE" in text.upper()


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    empty = tmp_path / "nothing.pdf"
    empty.touch()
    for media_type in (formats.PDF, formats.TEXT, formats.DOCX, formats.EPUB):
        assert _error(empty, media_type).code == "empty"


@pytest.mark.parametrize(
    ("relative", "code"),
    [
        ("pdf-problem/pikepdf-newline-buffer.pdf", "empty"),  # valid, empty page tree
        ("pdf-problem/pikepdf-cyclic-toc.pdf", "corrupt"),  # repaired to zero pages
    ],
)
def test_zero_page_pdfs(corpus_file: CorpusFile, relative: str, code: str) -> None:
    assert _error(corpus_file(relative), formats.PDF).code == code


def test_odt_is_never_an_empty_document(corpus_file: CorpusFile) -> None:
    odt = corpus_file("odt/live-manual.en.odt")
    for media_type in (formats.PDF, formats.EPUB, formats.CBZ, formats.DOCX, formats.XPS):
        error = _error(odt, media_type)
        assert error.code == "unsupported_type", (media_type, error)


def test_unknown_media_type_is_unsupported(corpus_file: CorpusFile) -> None:
    error = _error(corpus_file("pdf/latex-ltnews01.pdf"), "image/png")
    assert error.code == "unsupported_type"
    assert "supported formats" in error.reason


def test_page_limit_is_checked_before_reading(corpus_file: CorpusFile, tmp_path: Path) -> None:
    error = _error(corpus_file("pdf/r-intro.pdf"), formats.PDF, max_pages=100)
    assert error.code == "too_many_pages"
    assert "113" in error.reason and "100" in error.reason
    assert _error(corpus_file("epub/live-manual.en.epub"), formats.EPUB, 50).code == (
        "too_many_pages"
    )
    assert _error(corpus_file("text/debian-policy.txt"), formats.TEXT, 10).code == (
        "too_many_pages"
    )
    with open_document(corpus_file("pdf/r-intro.pdf"), formats.PDF, max_pages=113) as d:
        assert d.info.page_count == 113


# --- PDF content and warnings ------------------------------------------------------------


def test_image_only_pdf_parses_with_warnings(corpus_file: CorpusFile) -> None:
    pages = _all_pages(corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf"), formats.PDF)
    assert [p.number for p in pages] == [1, 2, 3, 4]
    assert all(p.text == "" and p.warnings == (NO_TEXT_LAYER,) for p in pages)
    sandwich = _all_pages(corpus_file("pdf-scanned/pikepdf-sandwich.pdf"), formats.PDF)
    assert "LinnSequencer" in sandwich[0].text and sandwich[0].warnings == ()


def test_unmapped_type3_font_is_flagged(corpus_file: CorpusFile) -> None:
    (page,) = _all_pages(corpus_file("pdf-problem/ocrmypdf-type3-font-nomapping.pdf"))
    assert UNMAPPED_GLYPHS in page.warnings
    assert not _CONTROLS.search(page.text)


def test_fuzzed_pdf_is_repaired_not_fatal(corpus_file: CorpusFile) -> None:
    (page,) = _all_pages(corpus_file("pdf-problem/pikepdf-fuzz-378014596.pdf"))
    assert page.warnings == (BLANK_PAGE, REPAIRED)


@pytest.mark.parametrize(
    ("relative", "scripts"),
    [
        ("pdf/metapost-manual.ru.pdf", ("CYRILLIC",)),
        ("pdf/debian-reference.ja.pdf", ("CJK UNIFIED", "HIRAGANA", "KATAKANA")),
        ("pdf/lshort-korean.pdf", ("HANGUL",)),
    ],
)
def test_non_latin_pdfs(corpus_file: CorpusFile, relative: str, scripts: tuple[str, ...]) -> None:
    with open_document(corpus_file(relative), formats.PDF, max_pages=BIG) as d:
        text = "".join(p.text for p in itertools.islice(d.pages(start=30), 10))
    assert _script_share(text, *scripts) > 0.5, text[:300]


def test_extraction_failure_keeps_going(
    corpus_file: CorpusFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_get_text: Any = pymupdf.Page.get_text

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.number == 1:
            raise RuntimeError("simulated MuPDF failure\nsecond line")
        return real_get_text(self, *args, **kwargs)

    monkeypatch.setattr(pymupdf.Page, "get_text", flaky)
    pages = _all_pages(corpus_file("pdf-problem/pikepdf-content-stream-errors.pdf"))
    assert [p.number for p in pages] == [1, 2, 3, 4]
    assert pages[1].text == ""
    assert pages[1].warnings == ("extraction_failed: simulated MuPDF failure",)
    assert all("Potato" in p.text for p in pages if p.number != 2)


def test_resume_matches_full_run(corpus_file: CorpusFile) -> None:
    path = corpus_file("pdf/r-intro.pdf")
    with open_document(path, formats.PDF, max_pages=BIG) as d:
        full = list(d.pages())
        tail = list(d.pages(start=100))
        assert list(d.pages(start=114)) == []
        for bad in (0, 115):
            with pytest.raises(ValueError):
                d.pages(start=bad)
    assert [p.number for p in tail] == list(range(100, 114))
    assert tail == full[99:]


def test_memory_trimming_does_not_change_text(
    corpus_file: CorpusFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = corpus_file("pdf/r-lang.pdf")
    reference = _all_pages(path, formats.PDF)
    # Trim at every check: the text must come out the same.
    monkeypatch.setattr(mupdf_doc, "CHECK_EVERY", 1)
    monkeypatch.setattr(mupdf_doc, "TRIM_GROWTH_BYTES", -1)
    assert _all_pages(path, formats.PDF) == reference
    raw = pymupdf.open(path)
    assert reference[40].text == raw[40].get_text()


def test_text_is_clean(corpus_file: CorpusFile) -> None:
    pages = _all_pages(corpus_file("pdf/lilypond-score-bach-bwv610.pdf"))
    raw = pymupdf.open(corpus_file("pdf/lilypond-score-bach-bwv610.pdf"))[1].get_text()
    assert "\x00" in raw  # the music font extracts as NULs...
    for page in pages:  # ...which never reach our text
        assert not _CONTROLS.search(page.text)
        page.text.encode("utf-8")


# --- other formats -----------------------------------------------------------------------


def test_epub_metadata_and_text(corpus_file: CorpusFile) -> None:
    with open_document(corpus_file("epub/live-manual.de.epub"), formats.EPUB, max_pages=BIG) as d:
        assert d.info.page_count == 332
        assert d.info.title == "Live Systems Handbuch"
        assert d.info.language == "de"
        text = "".join(p.text for p in itertools.islice(d.pages(), 40))
    assert "Live Systems" in text and " und " in text


def test_html_arabic(corpus_file: CorpusFile) -> None:
    path = corpus_file("html/debian-handbook.advanced-administration.ar.html")
    with open_document(path, formats.HTML, max_pages=BIG) as d:
        assert d.info.language == "ar-MA"
        assert d.info.page_count > 10
        text = "".join(p.text for p in d.pages())
    assert _script_share(text, "ARABIC") > 0.3  # the rest is Latin: commands, paths


def test_docx_tables_notes_and_text_boxes(corpus_file: CorpusFile) -> None:
    (tables,) = _all_pages(corpus_file("docx/mammoth-tables.docx"))
    assert "Top left\tTop right\n" in tables.text
    footnotes = _all_pages(corpus_file("docx/mammoth-footnotes.docx"))
    assert "A tachyon walks into a bar" in footnotes[-1].text
    endnotes = "".join(p.text for p in _all_pages(corpus_file("docx/mammoth-endnotes.docx")))
    assert "[2]" in endnotes and "[3]" in endnotes
    (box,) = _all_pages(corpus_file("docx/mammoth-text-box.docx"))
    assert box.text.count("Datum plane") == 1  # Word stores it twice (Choice + Fallback)


def test_docx_metadata(corpus_file: CorpusFile) -> None:
    path = corpus_file("docx/officer-example.docx")
    with open_document(path, formats.DOCX, max_pages=BIG) as d:
        assert d.info.title == "document title"
        assert d.info.language == "fr-FR"  # document default from styles.xml
        assert "Lorem ipsum" in next(d.pages()).text


def test_empty_and_strict_docx(corpus_file: CorpusFile) -> None:
    assert _error(corpus_file("docx/mammoth-empty.docx"), formats.DOCX).code == "empty"
    strict = _error(corpus_file("docx/mammoth-strict-format.docx"), formats.DOCX)
    assert strict.code == "unsupported_type"
    assert "Strict" in strict.reason


def test_docx_page_breaks_and_synthetic_pages(tmp_path: Path) -> None:
    document = docx.Document()
    document.core_properties.title = "Breaks"
    document.add_paragraph("first page")
    document.add_page_break()
    document.add_paragraph("second page")
    document.add_page_break()
    for i in range(300):
        document.add_paragraph(f"paragraph {i} " + "word " * 20)
    path = tmp_path / "breaks.docx"
    document.save(str(path))
    pages = _all_pages(path, formats.DOCX)
    assert pages[0].text == "first page"
    assert pages[1].text == "second page"
    assert len(pages) > 4
    assert all(len(p.text) < 2 * SYNTHETIC_PAGE_CHARS for p in pages)
    assert "paragraph 299" in pages[-1].text


def test_large_synthetic_corpus_docx_pages(corpus_file: CorpusFile) -> None:
    pages = _all_pages(corpus_file("derived/live-manual.en.docx"))
    assert 30 < len(pages) < 60
    assert sum(len(p.text) for p in pages) > 160_000


# --- plain text --------------------------------------------------------------------------


def test_text_pages_reassemble_to_the_file(corpus_file: CorpusFile) -> None:
    path = corpus_file("text/debian-policy.txt")
    original = path.read_text(encoding="utf-8")
    with open_document(path, formats.MARKDOWN, max_pages=BIG) as d:
        assert d.info.media_type == formats.MARKDOWN
        pages = list(d.pages())
        assert list(d.pages(start=50)) == pages[49:]
    assert "\n".join(p.text for p in pages) == original
    assert all(SYNTHETIC_PAGE_CHARS <= len(p.text) < 2 * SYNTHETIC_PAGE_CHARS for p in pages[:-1])


def _text_pages(tmp_path: Path, data: bytes) -> list[PageText]:
    path = tmp_path / "t.txt"
    path.write_bytes(data)
    return _all_pages(path, formats.TEXT)


def test_text_form_feeds_newlines_and_nuls(tmp_path: Path) -> None:
    pages = _text_pages(tmp_path, b"one\r\nline\x00s\f\ftwo\rthree\f")
    assert [p.text for p in pages] == ["one\nlines", "", "two\nthree"]
    assert pages[1].warnings == (BLANK_PAGE,)


def test_text_long_line_is_cut(tmp_path: Path) -> None:
    pages = _text_pages(tmp_path, b"x" * (5 * SYNTHETIC_PAGE_CHARS))
    assert [len(p.text) for p in pages] == [2 * SYNTHETIC_PAGE_CHARS] * 2 + [SYNTHETIC_PAGE_CHARS]


def test_text_encoding_fallbacks(tmp_path: Path) -> None:
    sample = "naïve café \u2013 \u201cquoted\u201d"  # en dash and curly quotes: cp1252-only bytes
    (cp1252,) = _text_pages(tmp_path, sample.encode("cp1252"))
    assert cp1252.text == sample
    assert cp1252.warnings == (DECODED_CP1252,)
    (latin1,) = _text_pages(tmp_path, b"caf\xe9 \x81")  # 0x81 is undefined in cp1252
    assert latin1.text == "café "
    assert latin1.warnings == (DECODED_LATIN1,)
    (utf16,) = _text_pages(tmp_path, "Grüße, 世界".encode("utf-16"))
    assert utf16.text == "Grüße, 世界" and utf16.warnings == ()


def test_whitespace_only_text_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_bytes(b" \n\t\n\x00\n")
    assert _error(path, formats.TEXT).code == "empty"


@pytest.mark.slow
def test_pdf_memory_stays_flat(corpus_file: CorpusFile) -> None:
    """RSS must not grow with pages read: without trimming this file grows ~40 MB."""
    import psutil  # a dev dependency: missing, the test fails rather than skips

    process = psutil.Process()
    path = corpus_file("pdf/pgfplots-manual.pdf")
    with open_document(path, formats.PDF, max_pages=BIG) as d:
        rss: dict[int, int] = {}
        for page in d.pages():
            if page.number in (50, d.info.page_count):
                rss[page.number] = process.memory_info().rss
    growth = rss[max(rss)] - rss[50]
    assert growth < 15 * 2**20, f"RSS grew {growth >> 20} MB from page 50 to the end"
