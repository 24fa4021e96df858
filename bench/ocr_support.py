"""Parts of bench/ocr.py the OCR tests share: character error rate, and image-only
"scans" rendered from real text pages (their text layer is the ground truth).

CER = Levenshtein distance / reference length, both texts NFKC-normalised with every
run of whitespace made one space: line breaks and ligatures differ between a text
layer and OCR without either being wrong. The distance is Hyyrö's bit-parallel form
of Myers' algorithm, one Python integer as the bit vector: a 3,000-character page
against its OCR takes milliseconds, where the textbook table would take seconds.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pymupdf

_pymupdf: Any = pymupdf
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character each)."""
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask, high = (1 << m) - 1, 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance, reference length) after `normalise`: sums of these over pages
    give a document's CER weighted by its text, not by its page count."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    return levenshtein(ref, hyp), len(ref)


def cer(reference: str, hypothesis: str) -> float:
    distance, length = errors(reference, hypothesis)
    return distance / max(length, 1)


def page_image(page: Any, dpi: int) -> Any:
    """The page as a scanner would give it: gray pixels at `dpi`, no text layer."""
    return page.get_pixmap(dpi=dpi, colorspace=_pymupdf.csGRAY)


def image_only_pdf(pages: list[Any], dpi: int, out: Path, language: str | None = None) -> list[str]:
    """A PDF of `pages` rendered at `dpi`, one image per page at the original size,
    its /Lang `language`, written to `out`; returns the pages' own text, the ground
    truth."""
    truth = []
    scan = _pymupdf.open()
    if language:
        scan.set_language(language)
    for page in pages:
        truth.append(str(page.get_text()))
        pix = page_image(page, dpi)
        target = scan.new_page(width=page.rect.width, height=page.rect.height)
        target.insert_image(target.rect, pixmap=pix)
    scan.save(out, deflate=True)
    scan.close()
    return truth
