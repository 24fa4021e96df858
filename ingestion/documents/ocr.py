"""OCR of one page with Tesseract, through PyMuPDF's OCR text pages.

MuPDF links Tesseract in; what a machine must have is the language data (Debian's
``tesseract-ocr`` and ``tesseract-ocr-<lang>`` packages), found as PyMuPDF finds it:
``TESSDATA_PREFIX``, else the folder ``tesseract --list-langs`` names (looked up once
per process, `find_tessdata`). Without it no page is OCR'd: each says why
(``ocr_skipped: ...``) and keeps today's ``no_text_layer``.

Which pages: `wants_ocr` (``auto``: pages that show images and have no text, so a
sandwich scan keeps its invisible layer; ``force``: every page; ``off``). How: the
whole page is rendered at `choose_dpi` (the configured DPI, lowered so that the
page stays under a pixel cap: Tesseract's peak is ~12 bytes a pixel, measured
at 170 MB for an A4 page at 300 dpi, 470 MB at 600 dpi) and recognised by
`ocr_page`, which never raises: a failure is the page's warning. Two engines read
the render (`OcrOptions.engine`): ``mupdf``, the Tesseract that PyMuPDF links in,
and ``tesseract``, Debian's command on the rendered image (ocr_tesseract), about as
accurate and 1.6-2.7x as fast (bench/ocr.py); `resolve_engine` makes ``auto`` the
command where it is on PATH. Images far larger than the render are no danger:
MuPDF decodes them subsampled (a 20,000 x 20,000 px image on an A4 page rendered at
150 dpi costs ~20 MB). Each call stands alone, so a
page, or a slice of pages, can be recognised by itself.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pymupdf

from ingestion.documents import ocr_orientation as orientation
from ingestion.documents import ocr_tesseract
from ingestion.documents.ocr_languages import (
    from_document_language,
    installed_in,
    language_problem,
)
from ingestion.documents.pagetext import (
    NO_TEXT_LAYER,
    OCR,
    OCR_FAILED,
    OCR_ROTATED,
    OCR_SKIPPED,
    OCR_WARNING,
    clean_text,
    first_line,
)
from ingestion.types import passes_through

OcrMode = Literal["auto", "force", "off"]
OCR_MODES: tuple[OcrMode, ...] = ("auto", "force", "off")
OcrEngine = Literal["mupdf", "tesseract"]
EngineChoice = Literal["auto", "mupdf", "tesseract"]

# PyMuPDF's functions are unannotated; strict mypy would refuse every call.
_pymupdf: Any = pymupdf
_REPEATED = re.compile(r"\.\.\. repeated \d+ times\.\.\.")
# Orientation trials (ocr_orientation) need to tell text from junk, not to read it.
TRIAL_DPI = 100


@dataclass(frozen=True)
class OcrOptions:
    """How a document's pages are OCR'd. `languages` None: the document's metadata
    language where Tesseract has it, else `default_languages`."""

    mode: OcrMode = "auto"
    languages: str | None = None
    default_languages: str = "eng"
    max_pages: int = 500  # per document; later pages say `ocr_skipped: page cap N reached`
    # Tesseract time a document may spend, so that the parse ends inside its task's
    # time limit with the rest of its pages instead of failing: `time budget N s reached`.
    max_seconds: float | None = None
    dpi: int = 300  # the most; large pages get less (`choose_dpi`)
    max_pixels: int = 20_000_000
    tessdata: Path | None = None  # None: `find_tessdata()`
    engine: OcrEngine = "mupdf"
    # The `tesseract` engine's time for one page, orientation trials included: past it
    # the command is killed and the page says `ocr_failed`. MuPDF's, in process, cannot
    # be stopped: only its task's time limit bounds it.
    timeout_s: float = 120.0


OFF = OcrOptions(mode="off")


@dataclass(frozen=True)
class OcrResult:
    text: str
    warnings: tuple[str, ...]

    @property
    def recognised(self) -> bool:
        """Tesseract ran on the page (its text may still be empty)."""
        return was_recognised(self.warnings)


def was_recognised(warnings: Sequence[str]) -> bool:
    """Whether a page with these warnings was read by Tesseract (``ocr: ...``)."""
    return any(w.startswith(f"{OCR}:") for w in warnings)


@functools.cache
def find_tessdata() -> Path | None:
    """Tesseract's language folder, or None when there is none with a language in it."""
    try:
        found = Path(str(_pymupdf.get_tessdata()))
    except (RuntimeError, OSError):
        return None
    return found if installed_in(found) else None


def resolve_engine(choice: EngineChoice) -> OcrEngine:
    """The engine `choice` names; ``auto``: the `tesseract` command where it is on PATH
    (looked up once per process), else MuPDF's."""
    if choice == "auto":
        return "tesseract" if ocr_tesseract.find_tesseract() is not None else "mupdf"
    return choice


def installed_languages(tessdata: Path | None = None) -> frozenset[str]:
    """The languages in `tessdata` (default: `find_tessdata()`); empty without Tesseract."""
    folder = tessdata if tessdata is not None else find_tessdata()
    return installed_in(folder) if folder is not None else frozenset()


def resolve_languages(options: OcrOptions, document_language: str | None) -> str:
    """The languages a document's pages are recognised in."""
    if options.languages:
        return options.languages
    installed = installed_languages(options.tessdata)
    return from_document_language(document_language, installed) or options.default_languages


def wants_ocr(mode: OcrMode, text: str, empty_kind: str | None) -> bool:
    """Whether a page with this extracted `text` (and, when blank, this kind from
    `mupdf_doc._empty_page_kind`) goes to Tesseract."""
    if mode == "force":
        return True
    return mode == "auto" and not text.strip() and empty_kind == NO_TEXT_LAYER


def choose_dpi(width_pt: float, height_pt: float, max_dpi: int, max_pixels: int) -> int:
    """`max_dpi`, or less so that the page renders to at most `max_pixels` pixels."""
    area_in2 = (width_pt / 72) * (height_pt / 72)
    if not area_in2 > 0:
        return max_dpi
    return max(1, min(max_dpi, math.floor(math.sqrt(max_pixels / area_in2))))


def skipped(reason: str) -> str:
    return f"{OCR_SKIPPED}: {reason}"


def unavailable(languages: str, options: OcrOptions) -> str | None:
    """Why no page can be recognised in `languages` here (no Tesseract, a language
    not installed, a bad list), or None: asked once before a document's pages are
    planned, so that a scan is not queued for OCR that cannot run."""
    tessdata = options.tessdata if options.tessdata is not None else find_tessdata()
    installed = installed_languages(tessdata)
    if tessdata is None or not installed:
        return "Tesseract is not installed (no language data found)"
    if options.engine == "tesseract" and ocr_tesseract.find_tesseract() is None:
        return f"the {ocr_tesseract.COMMAND} command is not on PATH"
    return language_problem(languages, installed)


def applied(result: OcrResult, text: str, warnings: list[str]) -> tuple[str, list[str]]:
    """A page's text and warnings once `result` is taken in: Tesseract's text, where it
    found any, replaces the page's own (`force`) and what was said about it; otherwise
    the page keeps what it had, and `result`'s warnings say why."""
    if result.recognised and result.text.strip():
        return result.text, list(result.warnings)
    return text, [*warnings, *result.warnings]


def ocr_page(page: Any, languages: str, options: OcrOptions) -> OcrResult:
    """Recognise the whole of a PyMuPDF `page` in `languages`: its text (cleaned as
    any page's) and warnings; ``ocr: <languages> <dpi>dpi`` when Tesseract ran."""
    problem = unavailable(languages, options)
    if problem is not None:
        return OcrResult("", (skipped(problem),))
    tessdata = options.tessdata if options.tessdata is not None else find_tessdata()
    assert tessdata is not None  # `unavailable` said it is there
    rect = page.rect
    dpi = choose_dpi(float(rect.width), float(rect.height), options.dpi, options.max_pixels)
    deadline = ocr_tesseract.Deadline.after(options.timeout_s)

    def read(at_dpi: int) -> str:
        if options.engine == "tesseract":
            return ocr_tesseract.recognise(page, languages, at_dpi, tessdata, deadline)
        return _recognise(page, languages, at_dpi, tessdata)

    _pymupdf.TOOLS.reset_mupdf_warnings()
    try:
        raw = read(dpi)
        turn = _orientation(page, raw, lambda: read(min(dpi, TRIAL_DPI)))
        if turn:
            raw = _turned(page, turn, lambda: read(dpi))
    except Exception as exc:  # MuPDF and Tesseract raise many kinds; the page says which
        if passes_through(exc):
            raise
        return OcrResult("", (f"{OCR_FAILED}: {first_line(exc)}",))
    warnings = [f"{OCR}: {languages} {dpi}dpi"]
    if turn:
        warnings.append(f"{OCR_ROTATED}: {turn}")
    # MuPDF renders around a damaged image (a broken stream, a bad fax code) and only
    # logs it: without this the page would look recognised and merely empty.
    logged = [ln for ln in str(_pymupdf.TOOLS.mupdf_warnings()).splitlines() if ln.strip()]
    # "... repeated N times..." counts the message before it, which may be a page of
    # another document's: MuPDF writes the count only when the next message comes.
    real = [ln for ln in logged if not _REPEATED.fullmatch(ln.strip())]
    if real:
        warnings.append(f"{OCR_WARNING}: {real[0][:120]}")
    return OcrResult(clean_text(raw), tuple(warnings))


def _recognise(page: Any, languages: str, dpi: int, tessdata: Path) -> str:
    textpage = page.get_textpage_ocr(language=languages, dpi=dpi, full=True, tessdata=str(tessdata))
    return str(page.get_text(textpage=textpage))


def _turned(page: Any, turn: int, recognise: Callable[[], str]) -> str:
    """`recognise` with the page turned by `turn` degrees (its /Rotate, in memory only)."""
    before = int(page.rotation)
    page.set_rotation((before + turn) % 360)
    try:
        return recognise()
    finally:
        page.set_rotation(before)


def _orientation(page: Any, drawn: str, low_resolution: Callable[[], str]) -> int:
    """The turn that makes a page read like text, tried at a low resolution only when
    the page as drawn does not (ocr_orientation); 0 for most pages, at no cost."""
    if not page.parent.is_pdf or not orientation.suspect(drawn):
        return 0  # only a PDF page can be turned
    trials = {t: orientation.score(_turned(page, t, low_resolution))[0] for t in orientation.TURNS}
    return orientation.best_turn(orientation.score(drawn)[0], trials)
