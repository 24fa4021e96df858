"""Tesseract language lists: their form (``deu+eng``), what a language folder holds,
and a document's metadata language as Tesseract names it. No PyMuPDF here, so that
settings and the API can check a list without loading it."""

from __future__ import annotations

import functools
import re
from pathlib import Path

# A Tesseract model name: `deu`, `chi_sim`, `deu_latf`, `srp_latn`.
_CODE = re.compile(r"[a-z]{3}(?:_[a-z]{3,4})?")
# Each language more is another full recognition pass over the page.
MAX_LANGUAGES = 4
# Installed, but not languages of text: orientation/script detection, equations.
_NOT_TEXT = frozenset({"osd", "equ"})

# A document's metadata language (BCP 47 / ISO 639-1) to Tesseract's model names.
_FROM_ISO639_1 = {
    "af": "afr", "ar": "ara", "be": "bel", "bg": "bul", "bn": "ben", "bs": "bos",
    "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu", "el": "ell",
    "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "eus", "fa": "fas",
    "fi": "fin", "fr": "fra", "ga": "gle", "gl": "glg", "he": "heb", "hi": "hin",
    "hr": "hrv", "hu": "hun", "hy": "hye", "id": "ind", "is": "isl", "it": "ita",
    "iw": "heb", "ja": "jpn", "ka": "kat", "kk": "kaz", "ko": "kor", "la": "lat",
    "lt": "lit", "lv": "lav", "mk": "mkd", "ms": "msa", "mt": "mlt", "nb": "nor",
    "nl": "nld", "nn": "nor", "no": "nor", "pl": "pol", "pt": "por", "ro": "ron",
    "ru": "rus", "sk": "slk", "sl": "slv", "sq": "sqi", "sr": "srp", "sv": "swe",
    "sw": "swa", "ta": "tam", "th": "tha", "tr": "tur", "uk": "ukr", "ur": "urd",
    "vi": "vie", "zh": "chi_sim",
}  # fmt: skip
_TRADITIONAL_CHINESE = ("tw", "hk", "mo", "hant")


@functools.cache
def installed_in(folder: Path) -> frozenset[str]:
    """The language models (``*.traineddata``) in a Tesseract language folder."""
    try:
        names = {p.name.removesuffix(".traineddata") for p in folder.glob("*.traineddata")}
    except OSError:
        return frozenset()
    return frozenset(names - _NOT_TEXT)


def language_problem(value: str, installed: frozenset[str] | None) -> str | None:
    """Why `value` (``deu+eng``) cannot be used, or None. With `installed` None (no
    Tesseract here to ask) only the form is checked."""
    codes = value.split("+")
    if not value or not all(_CODE.fullmatch(c) for c in codes):
        return f"{value!r} is not a list of Tesseract languages such as 'deu+eng'"
    if len(codes) > MAX_LANGUAGES:
        return f"at most {MAX_LANGUAGES} languages, not {len(codes)}"
    if len(set(codes)) != len(codes):
        return f"{value!r} names a language twice"
    missing = [c for c in codes if installed is not None and c not in installed]
    if missing:
        have = ", ".join(sorted(installed or ())) or "none"
        return f"language {'+'.join(missing)} is not installed (installed: {have})"
    return None


def from_document_language(tag: str | None, installed: frozenset[str]) -> str | None:
    """Tesseract's model for a metadata language tag (``de-DE``, ``zh-Hant``), if installed."""
    if not tag:
        return None
    parts = tag.strip().lower().replace("_", "-").split("-")
    code = _FROM_ISO639_1.get(parts[0])
    if code == "chi_sim" and any(p in _TRADITIONAL_CHINESE for p in parts[1:]):
        code = "chi_tra"
    if code is None and _CODE.fullmatch(parts[0]):
        code = parts[0]  # already a three-letter code, as some producers write
    return code if code in installed else None
