"""Whether OCR'd text reads like text, for pages scanned sideways or upside down.

MuPDF hands Tesseract the page as drawn, with no orientation detection, and a scan
placed at 90, 180 or 270 degrees comes back as junk (``SsaenSe2 eee Fs SsF5``; the
corpus's ``ocrmypdf-cardinal.pdf``: CER 0.8 against the upright page's 0.03). The
test is cheap and needs no dictionary: the share of a page's cased letters that
stand in words of the form ``word`` / ``Word``. Upright pages of the corpus's real
scans (English, French) score 0.82-0.99 at 100 dpi, every wrong orientation
0.38-0.69. Text in scripts without case (CJK, Arabic, Hebrew) is not judged: too few
cased letters, never turned.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")
# Below this many cased letters a page is a chart, a stamp, a photo: nothing to judge.
MIN_CASED = 200
# Under this score a page is tried at the other orientations.
SUSPECT_BELOW = 0.7
# A turn is taken when it scores at least this, and clearly more than the page as drawn.
ACCEPT_AT = 0.75
MARGIN = 0.1
TURNS = (90, 180, 270)


def score(text: str) -> tuple[float, int]:
    """(share of cased letters in well-formed words, cased letters counted)."""
    cased = good = 0
    for token in _WORD.findall(text):
        n = sum(1 for ch in token if ch.lower() != ch.upper())
        if not n:
            continue
        cased += n
        if len(token) >= 2 and token.isalpha() and token[1:].islower():
            good += n
    return good / max(cased, 1), cased


def suspect(text: str) -> bool:
    """Text enough to judge, and it reads like a page turned the wrong way."""
    share, cased = score(text)
    return cased >= MIN_CASED and share < SUSPECT_BELOW


def best_turn(drawn: float, trials: dict[int, float]) -> int:
    """The turn (0: none) whose score wins clearly over the page as drawn."""
    turn, best = max(trials.items(), key=lambda kv: kv[1], default=(0, 0.0))
    return turn if best >= ACCEPT_AT and best >= drawn + MARGIN else 0
