"""OCR of real scans and of real text pages rendered to images, through open_document
as a worker parses: recognised text, warnings, and the bounds on hostile pages.

The corpus's Linn manual page is there five times: scanned plain, CCITT G4 and JBIG2
compressed, skewed, rotated four ways (cardinal), and once with an invisible OCR layer
of its own (the sandwich): that layer is the reference for the others, compared as
bags of words, since its reading order is not Tesseract's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymupdf as _pymupdf
import pytest

from bench.ocr_support import cer, image_only_pdf
from ingestion.documents import formats
from ingestion.documents.ocr import OcrOptions, choose_dpi
from ingestion.documents.pagetext import NO_TEXT_LAYER
from ingestion.documents.parse import open_document
from ingestion.types import PageText

pymupdf: Any = _pymupdf
CorpusFile = Callable[[str], Path]
pytestmark = pytest.mark.usefixtures("tesseract")
SANDWICH = "pdf-scanned/pikepdf-sandwich.pdf"
GIB = 2**30


def _parse(path: Path, options: OcrOptions | None = None) -> list[PageText]:
    with open_document(
        path, formats.PDF, max_pages=10_000, ocr_options=options or OcrOptions()
    ) as doc:
        return list(doc.pages())


def _words(text: str) -> Counter[str]:
    return Counter(w.lower() for w in re.findall(r"[^\W\d_]{4,}", text))


def _recall(reference: str, hypothesis: str) -> float:
    """Share of the reference's words (4+ letters, with repeats) the hypothesis has."""
    ref = _words(reference)
    return sum((ref & _words(hypothesis)).values()) / max(sum(ref.values()), 1)


def _layer(path: Path) -> str:
    with pymupdf.open(path) as doc:
        return str(doc[0].get_text())


def _filters(path: Path) -> set[str]:
    with pymupdf.open(path) as doc:
        return {img[8] for page in doc for img in page.get_images(full=True)}


def _pages_of(src: Path, numbers: list[int], out: Path) -> Path:
    """Those pages of a real PDF, as a PDF of their own."""
    with pymupdf.open(src) as doc, pymupdf.open() as part:
        for n in numbers:
            part.insert_pdf(doc, from_page=n, to_page=n)
        part.save(out)
    return out


def _prose(text: str) -> bool:
    """A good page of running text: a CER needs text to count, and a table of
    contents's dot leaders measure only how Tesseract reads dots."""
    visible = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    return len(visible) >= 1_000 and letters >= 0.8 * len(visible)


def _full_pages(doc: Any, n: int) -> list[Any]:
    return [p for p in doc if _prose(p.get_text())][:n]


@pytest.mark.parametrize(
    ("name", "compression"),
    [
        ("ocrmypdf-linn.pdf", None),
        ("ocrmypdf-ccitt.pdf", "CCITTFaxDecode"),
        ("ocrmypdf-jbig2.pdf", "JBIG2Decode"),
        ("ocrmypdf-skew.pdf", None),
    ],
)
def test_real_scans_are_recognised(
    corpus_file: CorpusFile, name: str, compression: str | None
) -> None:
    path = corpus_file(f"pdf-scanned/{name}")
    if compression is not None:
        assert _filters(path) == {compression}
    (page,) = _parse(path)
    assert page.warnings == ("ocr: eng 300dpi",)
    assert _recall(_layer(corpus_file(SANDWICH)), page.text) >= 0.9


def test_rendered_text_pages_come_back_close_to_their_layer(
    corpus_file: CorpusFile, tmp_path: Path
) -> None:
    with pymupdf.open(corpus_file("pdf/r-intro.pdf")) as src:
        truth = image_only_pdf(_full_pages(src, 2), 150, tmp_path / "scan.pdf")
    pages = _parse(tmp_path / "scan.pdf")
    assert [p.warnings for p in pages] == [("ocr: eng 300dpi",)] * 2
    for page, text in zip(pages, truth, strict=True):
        assert cer(text, page.text) < 0.05


def test_a_document_in_french_is_read_in_french(corpus_file: CorpusFile, tmp_path: Path) -> None:
    with pymupdf.open(corpus_file("epub/live-manual.fr.epub")) as src:
        truth = image_only_pdf(_full_pages(src, 1), 150, tmp_path / "fr.pdf", language="fr-FR")
    (page,) = _parse(tmp_path / "fr.pdf", OcrOptions(default_languages="eng"))
    assert page.warnings == ("ocr: fra 300dpi",)
    assert cer(truth[0], page.text) < 0.05
    # Read as English, the accents go: the document's language was worth following.
    (english,) = _parse(tmp_path / "fr.pdf", OcrOptions(languages="eng"))
    assert cer(truth[0], english.text) > cer(truth[0], page.text)


def test_a_sandwich_keeps_its_own_layer(corpus_file: CorpusFile) -> None:
    path = corpus_file(SANDWICH)
    (page,) = _parse(path)
    assert page.warnings == ()
    assert page.text == _parse(path, OcrOptions(mode="off"))[0].text


def test_off_keeps_no_text_layer(corpus_file: CorpusFile) -> None:
    pages = _parse(corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf"), OcrOptions(mode="off"))
    assert [(p.text, p.warnings) for p in pages] == [("", (NO_TEXT_LAYER,))] * 4


def test_force_ocrs_text_pages_up_to_the_cap(corpus_file: CorpusFile, tmp_path: Path) -> None:
    src = corpus_file("pdf/r-intro.pdf")
    with pymupdf.open(src) as doc:
        numbers = [p.number for p in _full_pages(doc, 2)]
        layers = [str(doc[n].get_text()) for n in numbers]
    first, second = _parse(
        _pages_of(src, numbers, tmp_path / "two.pdf"), OcrOptions(mode="force", max_pages=1)
    )
    assert first.warnings == ("ocr: eng 300dpi",)
    assert cer(layers[0], first.text) < 0.05
    assert second.warnings == ("ocr_skipped: page cap 1 reached",)
    assert second.text == _parse(tmp_path / "two.pdf", OcrOptions(mode="off"))[1].text


def test_an_unknown_language_is_a_page_warning(corpus_file: CorpusFile) -> None:
    pages = _parse(corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf"), OcrOptions(languages="xyz"))
    for page in pages:
        assert page.text == ""
        assert page.warnings[0] == NO_TEXT_LAYER
        assert page.warnings[1].startswith("ocr_skipped: language xyz is not installed")


def test_a_scan_placed_sideways_is_turned(corpus_file: CorpusFile, tmp_path: Path) -> None:
    # Page 2 of cardinal draws the upright scan turned by 90 degrees.
    path = _pages_of(corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf"), [1], tmp_path / "p2.pdf")
    (page,) = _parse(path, OcrOptions(dpi=150))
    assert page.warnings[0] == "ocr: eng 150dpi"
    assert page.warnings[1] in ("ocr_rotated: 90", "ocr_rotated: 270")
    assert _recall(_layer(corpus_file(SANDWICH)), page.text) >= 0.85


def _in_child(path: Path, options: str = "OcrOptions()") -> dict[str, Any]:
    """Parse `path` in a fresh process: its page, and its peak RSS (VmHWM)."""
    code = (
        "import json;from pathlib import Path;"
        "from ingestion.documents.parse import open_document;"
        "from ingestion.documents.ocr import OcrOptions;"
        f"d=open_document(Path({str(path)!r}),'application/pdf',max_pages=1,"
        f"ocr_options={options});"
        "(p,)=d.pages();"
        "hwm=[ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0];"
        "print(json.dumps({'text':p.text,'warnings':p.warnings,"
        "'hwm':int(hwm.split()[1])*1024}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return out


def test_a_huge_page_is_rendered_under_the_pixel_cap(
    corpus_file: CorpusFile, tmp_path: Path
) -> None:
    # 20,000 x 20,000 pt (7 m square) with the Linn scan over it: at 300 dpi that is
    # 6.9 billion pixels; the cap brings it to 20 million.
    with pymupdf.open(corpus_file("pdf-scanned/ocrmypdf-linn.pdf")) as src:
        pix = src[0].get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
    with pymupdf.open() as doc:
        page = doc.new_page(width=20_000, height=20_000)
        page.insert_image(page.rect, pixmap=pix)
        doc.save(tmp_path / "huge.pdf", deflate=True)
    got = _in_child(tmp_path / "huge.pdf")
    dpi = choose_dpi(20_000, 20_000, 300, OcrOptions().max_pixels)
    assert got["warnings"] == [f"ocr: eng {dpi}dpi"]
    assert (20_000 * dpi / 72) ** 2 <= OcrOptions().max_pixels
    assert got["hwm"] < GIB
    assert _recall(_layer(corpus_file(SANDWICH)), got["text"]) >= 0.85


def test_a_huge_image_is_decoded_subsampled(tmp_path: Path) -> None:
    # 20,000 x 20,000 RGB pixels (1.2 GB decoded, 1.2 MB deflated) on a Letter page.
    side = 20_000
    packer = zlib.compressobj(1)
    rows = b"\xff" * (side * 3 * 500)
    stream = b"".join(packer.compress(rows) for _ in range(side // 500)) + packer.flush()
    with pymupdf.open() as doc:
        page = doc.new_page(width=612, height=792)
        page.insert_image(page.rect, pixmap=pymupdf.Pixmap(pymupdf.csRGB, (0, 0, 8, 8), False))
        xref = page.get_images(full=True)[0][0]
        doc.update_stream(xref, stream, compress=False)
        for key, value in [
            ("Width", str(side)), ("Height", str(side)), ("BitsPerComponent", "8"),
            ("ColorSpace", "/DeviceRGB"), ("Filter", "/FlateDecode"),
            ("DecodeParms", "null"), ("SMask", "null"),
        ]:  # fmt: skip
            doc.xref_set_key(xref, key, value)
        doc.save(tmp_path / "big-image.pdf")
    got = _in_child(tmp_path / "big-image.pdf")
    assert got["warnings"] == [NO_TEXT_LAYER, "ocr: eng 300dpi"]  # white: nothing to read
    assert got["hwm"] < GIB


def corrupt_scan(corpus_file: CorpusFile, path: Path) -> Path:
    """Two real scans, the first with its G4 image stream damaged past its first tenth."""
    with pymupdf.open(corpus_file("pdf-scanned/ocrmypdf-ccitt.pdf")) as doc:
        doc.insert_pdf(pymupdf.open(corpus_file("pdf-scanned/ocrmypdf-jbig2.pdf")))
        xref = doc[0].get_images(full=True)[0][0]
        keys = {k: doc.xref_get_key(xref, k)[1] for k in ("Filter", "DecodeParms")}
        raw = doc.xref_stream_raw(xref)
        # The first tenth kept, the rest bytes that are no G4 fax code.
        doc.update_stream(xref, raw[: len(raw) // 10] + bytes(range(256)) * 64, compress=False)
        for key, value in keys.items():
            doc.xref_set_key(xref, key, value)
        doc.save(path)
    return path


def test_a_corrupt_image_stream_is_a_page_warning(corpus_file: CorpusFile, tmp_path: Path) -> None:
    damaged, intact = _parse(corrupt_scan(corpus_file, tmp_path / "corrupt.pdf"))
    assert damaged.warnings[0] in (NO_TEXT_LAYER, "ocr: eng 300dpi")
    assert any(w.startswith(("ocr_warning: ", "ocr_failed: ")) for w in damaged.warnings)
    assert intact.warnings == ("ocr: eng 300dpi",)
    assert _recall(_layer(corpus_file(SANDWICH)), intact.text) >= 0.9


def test_past_the_time_budget_pages_are_skipped_not_the_document(corpus_file: CorpusFile) -> None:
    # A budget below one page's OCR: the first page is read, the others say why not.
    pages = _parse(
        corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf"), OcrOptions(dpi=100, max_seconds=0.001)
    )
    assert pages[0].warnings == ("ocr: eng 100dpi",) and pages[0].text
    for page in pages[1:]:
        assert page.warnings == (NO_TEXT_LAYER, "ocr_skipped: time budget 0.001 s reached")
