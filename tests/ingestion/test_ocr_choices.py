"""OCR's choices that need no Tesseract: language lists, the metadata language as
Tesseract names it, the DPI under the pixel cap, the orientation test, and a machine
without language data (a folder with none in it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestion.documents import formats
from ingestion.documents.ocr import OcrOptions, choose_dpi, resolve_languages, wants_ocr
from ingestion.documents.ocr_languages import from_document_language, language_problem
from ingestion.documents.ocr_orientation import best_turn, score, suspect
from ingestion.documents.pagetext import BLANK_PAGE, GRAPHICS_ONLY, NO_TEXT_LAYER
from ingestion.documents.parse import open_document

CorpusFile = Callable[[str], Path]
INSTALLED = frozenset({"eng", "deu", "fra", "chi_tra"})


@pytest.mark.parametrize("value", ["eng", "deu+eng", "chi_sim+eng", "deu_latf", "srp_latn"])
def test_well_formed_lists_pass(value: str) -> None:
    assert language_problem(value, None) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "not a list"),
        ("en", "not a list"),
        ("deu eng", "not a list"),
        ("deu+", "not a list"),
        ("ENG", "not a list"),
        ("../eng", "not a list"),
        ("eng+deu+fra+spa+ita", "at most 4"),
        ("eng+eng", "twice"),
    ],
)
def test_malformed_lists_say_why(value: str, says: str) -> None:
    problem = language_problem(value, None)
    assert problem is not None and says in problem


def test_a_list_names_what_is_not_installed() -> None:
    problem = language_problem("deu+xyz+eng+kor", INSTALLED)
    assert problem is not None
    assert "xyz+kor is not installed" in problem and "deu, eng, fra" in problem
    assert language_problem("fra+eng", INSTALLED) is None


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("de", "deu"),
        ("de-DE", "deu"),
        ("fr_CA", "fra"),
        ("EN-us", "eng"),
        ("zh-TW", "chi_tra"),
        ("zh-Hant-HK", "chi_tra"),
        ("zh-CN", None),  # chi_sim is not in INSTALLED
        ("deu", "deu"),
        ("ja", None),
        ("x-klingon", None),
        ("", None),
        (None, None),
    ],
)
def test_document_language_to_tesseract(tag: str | None, code: str | None) -> None:
    assert from_document_language(tag, INSTALLED) == code


def test_languages_come_from_upload_then_document_then_setting(tmp_path: Path) -> None:
    (tmp_path / "deu.traineddata").write_bytes(b"")
    (tmp_path / "eng.traineddata").write_bytes(b"")
    base = OcrOptions(default_languages="eng", tessdata=tmp_path)
    assert resolve_languages(base, "de-AT") == "deu"
    assert resolve_languages(base, "fr") == "eng"  # not installed there
    assert resolve_languages(base, None) == "eng"
    upload = OcrOptions(languages="fra+eng", tessdata=tmp_path)
    assert resolve_languages(upload, "de") == "fra+eng"


@pytest.mark.parametrize(
    ("w", "h", "max_dpi", "max_pixels"),
    [
        (612, 792, 300, 20_000_000),  # US Letter: the full 300
        (2384, 3370, 300, 20_000_000),  # A0
        (20_000, 20_000, 300, 20_000_000),
        (14_400, 200, 600, 5_000_000),  # a long strip
        (1e6, 1e6, 300, 20_000_000),
    ],
)
def test_dpi_keeps_the_render_under_the_pixel_cap(
    w: float, h: float, max_dpi: int, max_pixels: int
) -> None:
    dpi = choose_dpi(w, h, max_dpi, max_pixels)
    assert 1 <= dpi <= max_dpi
    pixels = (w * dpi / 72) * (h * dpi / 72)
    assert pixels <= max_pixels or dpi == 1
    if dpi < max_dpi:  # lowered no more than needed
        assert (w * (dpi + 1) / 72) * (h * (dpi + 1) / 72) > max_pixels
    assert choose_dpi(0, 0, max_dpi, max_pixels) == max_dpi


def test_letter_at_300_is_not_lowered() -> None:
    assert choose_dpi(612, 792, 300, 20_000_000) == 300
    assert choose_dpi(20_000, 20_000, 300, 20_000_000) == math.floor(
        math.sqrt(20_000_000 / (20_000 / 72) ** 2)
    )


def test_which_pages_go_to_tesseract() -> None:
    assert wants_ocr("auto", "", NO_TEXT_LAYER)
    assert not wants_ocr("auto", "", BLANK_PAGE)
    assert not wants_ocr("auto", "", GRAPHICS_ONLY)
    assert not wants_ocr("auto", "a text layer", None)
    assert wants_ocr("force", "a text layer", None)
    assert wants_ocr("force", "", BLANK_PAGE)
    assert not wants_ocr("off", "", NO_TEXT_LAYER)


def test_orientation_score_tells_text_from_junk(corpus_file: CorpusFile) -> None:
    import pymupdf

    text = pymupdf.open(corpus_file("pdf-scanned/pikepdf-sandwich.pdf"))[0].get_text()
    share, cased = score(text)
    assert share > 0.8 and cased > 1000
    assert not suspect(text)
    # The same letters, each word reversed and its case swapped: what a sideways
    # page gives back is no more word-like than this.
    junk = " ".join(w[::-1].swapcase() for w in text.split())
    assert suspect(junk)
    assert not suspect("2024 13.5 | 17 — 42")  # too few letters to judge
    assert not suspect("東京都の人口は約千四百万人です。" * 50)  # no case: not judged
    assert best_turn(0.45, {90: 0.5, 180: 0.86, 270: 0.4}) == 180
    assert best_turn(0.45, {90: 0.5, 180: 0.6, 270: 0.4}) == 0  # none reads well
    assert best_turn(0.72, {90: 0.78, 180: 0.4, 270: 0.4}) == 0  # not clearly better


def test_without_language_data_pages_say_so_and_keep_no_text_layer(
    corpus_file: CorpusFile, tmp_path: Path
) -> None:
    # A folder with no language in it is what a machine without Tesseract has.
    options = OcrOptions(tessdata=tmp_path)
    with open_document(
        corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf"),
        formats.PDF,
        max_pages=10,
        ocr_options=options,
    ) as doc:
        pages = list(doc.pages())
    assert len(pages) == 4
    for page in pages:
        assert page.text == ""
        assert page.warnings == (
            NO_TEXT_LAYER,
            "ocr_skipped: Tesseract is not installed (no language data found)",
        )
