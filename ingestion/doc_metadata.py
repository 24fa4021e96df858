"""Document language from the places MuPDF does not look.

MuPDF reports a language only for PDFs (the catalog's /Lang). EPUB keeps it in
the package document's ``dc:language``, HTML in ``<html lang>``, FictionBook
in ``<lang>``. Each helper reads a bounded amount and returns None on any
doubt: a missing language is normal, a wrong one is worse.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

_READ_LIMIT = 256 * 1024
_TAG = r"([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*)"
_HTML_LANG = re.compile(rb"<html\b[^>]*?\b(?:xml:)?lang\s*=\s*[\"']?" + _TAG.encode(), re.I)
# DocBook output puts the language on the chapter wrapper, not on <html>.
_WRAPPER_LANG = re.compile(
    rb"<(?:body|div|main|article|section)\b[^>]*?\b(?:xml:)?lang\s*=\s*[\"']?" + _TAG.encode(),
    re.I,
)
_FB2_LANG = re.compile(rb"<lang>\s*" + _TAG.encode() + rb"\s*</lang>", re.I)
_ROOTFILE = re.compile(rb"<(?:\w+:)?rootfile\b[^>]*\bfull-path\s*=\s*[\"']([^\"']+)[\"']", re.I)
_DC = "{http://purl.org/dc/elements/1.1/}"


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(_READ_LIMIT)


def html_language(path: Path) -> str | None:
    head = _head(path)
    match = _HTML_LANG.search(head) or _WRAPPER_LANG.search(head)
    return match.group(1).decode("ascii") if match else None


def fb2_language(path: Path) -> str | None:
    match = _FB2_LANG.search(_head(path))
    return match.group(1).decode("ascii") if match else None


def epub_language(path: Path) -> str | None:
    """The first ``dc:language`` of the EPUB's package document."""
    try:
        with zipfile.ZipFile(path) as zf:
            with zf.open("META-INF/container.xml") as f:
                match = _ROOTFILE.search(f.read(_READ_LIMIT))
            if match is None:
                return None
            with zf.open(match.group(1).decode("utf-8")) as f:
                root = ElementTree.fromstring(f.read(_READ_LIMIT * 4))
    except (KeyError, OSError, zipfile.BadZipFile, ElementTree.ParseError, UnicodeError):
        return None
    for element in root.iter(f"{_DC}language"):
        value = (element.text or "").strip()
        if value:
            return value
    return None
