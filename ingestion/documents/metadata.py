"""Document language from the places MuPDF does not look.

MuPDF reports a language only for PDFs (the catalog's /Lang). EPUB keeps it in
the package document's ``dc:language``, HTML in ``<html lang>``, FictionBook
in ``<lang>``. Each helper reads a bounded amount and returns None on any
doubt: a missing language is normal, a wrong one is worse.

The bytes are the client's: patterns run on RE2 (linear in the text, whatever it
holds; Python's `re` took 94 s on 250 KB of unclosed ``<div `` tags), and XML goes
through expat, which is linear too.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from xml.etree import ElementTree

from ingestion.linear_regex import LinearPattern

# The language sits at the top of a file: on <html>, or on the first wrapper after the
# <head>. 256 KiB leaves room for a head full of inline styles and scripts, and bounds
# what a file without one costs to sniff.
_READ_LIMIT = 256 * 1024
# The package document (EPUB's .opf) lists every file of the book: larger.
_PACKAGE_LIMIT = 4 * _READ_LIMIT
_TAG = rb"([A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*)"
# [^<>]: the attribute must be inside the tag that opened the match, not in a later one.
_ATTR = rb"\b[^<>]*?\b(?:xml:)?lang\s*=\s*[\"']?" + _TAG
_HTML_LANG = LinearPattern(rb"<html" + _ATTR, ignore_case=True)
# DocBook output puts the language on the chapter wrapper, not on <html>.
_WRAPPER_LANG = LinearPattern(rb"<(?:body|div|main|article|section)" + _ATTR, ignore_case=True)
_FB2_LANG = LinearPattern(rb"<lang>\s*" + _TAG + rb"\s*</lang>", ignore_case=True)
_DC = "{http://purl.org/dc/elements/1.1/}"


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(_READ_LIMIT)


def _ascii(value: bytes | None) -> str | None:
    return value.decode("ascii") if value else None


def html_language(path: Path) -> str | None:
    head = _head(path)
    return _ascii(_HTML_LANG.group(head) or _WRAPPER_LANG.group(head))


def fb2_language(path: Path) -> str | None:
    return _ascii(_FB2_LANG.group(_head(path)))


def _local_name(tag: str) -> str:
    return tag.rpartition("}")[2]


def _package_path(container: bytes) -> str | None:
    """The first rootfile's ``full-path`` in META-INF/container.xml."""
    root = ElementTree.fromstring(container)
    for element in root.iter():
        if _local_name(element.tag) == "rootfile":
            return element.get("full-path") or None
    return None


def epub_language(path: Path) -> str | None:
    """The first ``dc:language`` of the EPUB's package document."""
    try:
        with zipfile.ZipFile(path) as zf:
            with zf.open("META-INF/container.xml") as f:
                package = _package_path(f.read(_READ_LIMIT))
            if package is None:
                return None
            with zf.open(package) as f:
                root = ElementTree.fromstring(f.read(_PACKAGE_LIMIT))
    # LookupError: a missing member (KeyError), or an XML declaration naming an
    # encoding Python does not know.
    except (LookupError, OSError, zipfile.BadZipFile, ElementTree.ParseError, UnicodeError):
        return None
    for element in root.iter(f"{_DC}language"):
        value = (element.text or "").strip()
        if value:
            return value
    return None
