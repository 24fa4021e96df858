"""The two OCR engines (`OcrOptions.engine`): the Tesseract MuPDF links in, and the
`tesseract` command on the page as MuPDF renders it (ocr_tesseract). Both read the
corpus's real scans alike, against the sandwich's own layer as test_ocr.py compares;
``auto`` follows PATH; what goes wrong with the command (no command, a damaged
image, a broken language file, its time limit) is a page warning, never an error.
Low resolutions where the assertion allows: each page is a second or more of CPU.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pymupdf
import pytest

from bench.ocr_support import cer, image_only_pdf
from ingestion.documents.ocr import OcrEngine, OcrOptions, resolve_engine
from ingestion.documents.ocr_tesseract import find_tesseract
from ingestion.documents.pagetext import NO_TEXT_LAYER
from tests.ingestion.test_ocr import (
    SANDWICH,
    _full_pages,
    _layer,
    _pages_of,
    _parse,
    _recall,
    corrupt_scan,
)

CorpusFile = Callable[[str], Path]
pytestmark = pytest.mark.usefixtures("tesseract")
LINN = "pdf-scanned/ocrmypdf-linn.pdf"
ENGINES: tuple[OcrEngine, ...] = ("mupdf", "tesseract")


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    """`find_tesseract` looks PATH up again in the test, and again after it."""
    find_tesseract.cache_clear()
    yield
    find_tesseract.cache_clear()


def _tesseract_children() -> list[int]:
    """This process's `tesseract` children still there (running or unreaped)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
        except OSError:
            continue  # ended while we looked
        name, rest = fields[0].split("(", 1)[1], fields[1].split()
        if name == "tesseract" and int(rest[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("engine", ENGINES)
def test_both_engines_read_a_real_scan(corpus_file: CorpusFile, engine: OcrEngine) -> None:
    (page,) = _parse(corpus_file(LINN), OcrOptions(engine=engine, dpi=150))
    assert page.warnings == ("ocr: eng 150dpi",)
    assert _recall(_layer(corpus_file(SANDWICH)), page.text) >= 0.9


def test_the_command_reads_in_the_languages_asked(corpus_file: CorpusFile, tmp_path: Path) -> None:
    with pymupdf.open(corpus_file("epub/live-manual.fr.epub")) as src:
        truth = image_only_pdf(_full_pages(src, 1), 150, tmp_path / "fr.pdf", language="fr-FR")
    command = OcrOptions(engine="tesseract", dpi=150)
    (french,) = _parse(tmp_path / "fr.pdf", command)
    assert french.warnings == ("ocr: fra 150dpi",)
    assert cer(truth[0], french.text) < 0.05
    # Read as English the accents go: `-l` reached the command.
    (english,) = _parse(tmp_path / "fr.pdf", replace(command, languages="eng"))
    assert english.warnings == ("ocr: eng 150dpi",)
    assert cer(truth[0], english.text) > cer(truth[0], french.text)


def test_the_command_keeps_the_orientation_trials(corpus_file: CorpusFile, tmp_path: Path) -> None:
    # Page 3 of cardinal draws the upright scan upside down.
    path = _pages_of(corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf"), [2], tmp_path / "p3.pdf")
    (page,) = _parse(path, OcrOptions(engine="tesseract", dpi=100))
    assert page.warnings == ("ocr: eng 100dpi", "ocr_rotated: 180")
    assert _recall(_layer(corpus_file(SANDWICH)), page.text) >= 0.85


def test_auto_is_the_command_on_path_looked_up_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_lookup: None
) -> None:
    real = shutil.which("tesseract")
    assert real is not None, "the tesseract command is installed with its data (make ocr-tools)"
    assert resolve_engine("auto") == "tesseract"
    monkeypatch.setenv("PATH", str(tmp_path))  # a folder without it
    assert resolve_engine("auto") == "tesseract"  # this process looked already
    find_tesseract.cache_clear()
    assert resolve_engine("auto") == "mupdf"
    assert (resolve_engine("mupdf"), resolve_engine("tesseract")) == ("mupdf", "tesseract")
    (tmp_path / "tesseract").symlink_to(real)
    find_tesseract.cache_clear()
    assert find_tesseract() == str(tmp_path / "tesseract")
    assert resolve_engine("auto") == "tesseract"


def test_the_command_asked_for_but_missing_skips_the_page(
    corpus_file: CorpusFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_lookup: None
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    (page,) = _parse(corpus_file(LINN), OcrOptions(engine="tesseract", dpi=72))
    assert page.warnings == (NO_TEXT_LAYER, "ocr_skipped: the tesseract command is not on PATH")
    # MuPDF's engine needs no command.
    (inside,) = _parse(corpus_file(LINN), OcrOptions(engine="mupdf", dpi=72))
    assert inside.warnings == ("ocr: eng 72dpi",) and inside.text.strip()


def test_a_corrupt_image_is_the_same_warning_with_either_engine(
    corpus_file: CorpusFile, tmp_path: Path
) -> None:
    path = corrupt_scan(corpus_file, tmp_path / "corrupt.pdf")
    damaged, intact = _parse(path, OcrOptions(engine="tesseract", dpi=150))
    assert damaged.warnings[0] in (NO_TEXT_LAYER, "ocr: eng 150dpi")
    assert any(w.startswith(("ocr_warning: ", "ocr_failed: ")) for w in damaged.warnings)
    assert intact.warnings == ("ocr: eng 150dpi",)
    assert _recall(_layer(corpus_file(SANDWICH)), intact.text) >= 0.9
    # MuPDF renders for both engines, and says the same of the damaged stream.
    (inside,) = _parse(_pages_of(path, [0], tmp_path / "damaged.pdf"), OcrOptions(dpi=150))
    assert inside.warnings == damaged.warnings


def test_a_page_past_its_time_limit_fails_and_leaves_no_process(corpus_file: CorpusFile) -> None:
    # The render takes ~0.02 s, the command over a second: it is killed mid-page.
    (page,) = _parse(corpus_file(LINN), OcrOptions(engine="tesseract", dpi=150, timeout_s=0.5))
    assert page.text == ""
    assert page.warnings == (
        NO_TEXT_LAYER,
        "ocr_failed: tesseract passed the page's time limit of 0.5 s",
    )
    assert _tesseract_children() == []


def test_a_command_that_fails_says_why(corpus_file: CorpusFile, tmp_path: Path) -> None:
    # A language file that is no model: the command starts, and exits with an error.
    (tmp_path / "eng.traineddata").write_bytes(b"not a model " * 500)
    options = OcrOptions(engine="tesseract", dpi=72, tessdata=tmp_path)
    (page,) = _parse(corpus_file(LINN), options)
    assert page.text == ""
    no_text, failed = page.warnings
    assert no_text == NO_TEXT_LAYER
    assert failed.startswith("ocr_failed: tesseract exited with 1: ")
    assert "Error opening data file" in failed  # Tesseract's first line
