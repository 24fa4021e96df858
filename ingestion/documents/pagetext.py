"""Cleaning extracted page text, and the page warning vocabulary.

Warnings are short stable strings, so that callers can count and filter them:

``blank_page``
    nothing is drawn on the page (or a reflowed page came out empty).
``no_text_layer``
    the page shows images but has no text: a scan or a picture. Kept when OCR
    was off, skipped, failed or found no text.
``ocr: <languages> <dpi>dpi``
    the page's text was recognised by Tesseract (``ocr: deu+eng 300dpi``), from a
    render at that resolution (lower than configured on large pages).
``ocr_rotated: <degrees>``
    the page was recognised turned by 90, 180 or 270 degrees: drawn as it is, it
    did not read like text (a scan placed sideways or upside down).
``ocr_skipped: <reason>``
    the page needed OCR but did not get it: ``page cap N reached``, ``time budget
    N s reached``, Tesseract or the language not installed, a bad language list.
``ocr_failed: <message>``
    rendering or recognising the page raised; the page keeps what it had.
``ocr_warning: <message>``
    MuPDF logged a problem while rendering the page for OCR (a damaged image
    stream, say): its first line; the text may be incomplete or empty.
``graphics_only``
    vector drawings but no text and no images (charts, ornaments, music).
``unmapped_glyphs``
    a large share of the characters came from fonts without a Unicode mapping
    (they extract as control characters, removed here); the text is unreliable.
``repaired``
    MuPDF had to repair the file's structure; pages may be missing or damaged.
``extraction_failed: <message>``
    the page could not be read; it is yielded with empty text.
``decoded_cp1252`` / ``decoded_latin1``
    a text file was not valid UTF-8 and was decoded with this fallback.

Document-wide warnings (``repaired``, ``decoded_*``) are repeated on every page
so that each page record stands alone, including after a resumed parse.
"""

from __future__ import annotations

import re

# Target size of pages cut by us (text files, DOCX without page breaks):
# about what a printed page holds, so page numbers stay meaningful to people.
SYNTHETIC_PAGE_CHARS = 4000

BLANK_PAGE = "blank_page"
NO_TEXT_LAYER = "no_text_layer"
GRAPHICS_ONLY = "graphics_only"
UNMAPPED_GLYPHS = "unmapped_glyphs"
REPAIRED = "repaired"
EXTRACTION_FAILED = "extraction_failed"
DECODED_CP1252 = "decoded_cp1252"
DECODED_LATIN1 = "decoded_latin1"
OCR = "ocr"
OCR_SKIPPED = "ocr_skipped"
OCR_FAILED = "ocr_failed"
OCR_WARNING = "ocr_warning"
OCR_ROTATED = "ocr_rotated"

# C0 controls other than tab and newline, DEL, and the C1 controls: none is
# text, and NUL in particular breaks PostgreSQL text columns.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_UNMAPPED = re.compile("[\x00-\x08\x0b-\x1f\ufffd]")
_SPACES = re.compile(r"\s")
# Below this many characters a few odd glyphs (a logo, a bullet) are noise.
_UNMAPPED_MIN_CHARS = 20
_UNMAPPED_SHARE = 0.10


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), at
    most 120 characters: what a page's warning says of it."""
    message = str(exc).strip()
    return (message.splitlines()[0] if message else type(exc).__name__)[:120]


def failure_warning(exc: BaseException) -> str:
    """``extraction_failed: <first line of the message, at most 120 chars>``."""
    return f"{EXTRACTION_FAILED}: {first_line(exc)}"


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def clean_text(text: str) -> str:
    """Valid, storable text: LF line ends, no control characters, no lone surrogates."""
    text = normalize_newlines(text)
    text = _CONTROLS.sub("", text)
    return _SURROGATES.sub("\ufffd", text)


def has_unmapped_glyphs(raw: str) -> bool:
    """True when many of `raw`'s visible characters are unmapped glyphs."""
    # Almost every page has neither; one C-level scan spares the count below.
    if "\ufffd" not in raw and not _CONTROLS.search(raw):
        return False
    visible = len(raw) - len(_SPACES.findall(raw))
    if visible < _UNMAPPED_MIN_CHARS:
        return bool(raw.strip()) and not _CONTROLS.sub("", raw).strip()
    return len(_UNMAPPED.findall(raw)) >= _UNMAPPED_SHARE * visible
