"""Markup nested deep enough to crash MuPDF is refused before MuPDF sees it.

Without the check, every hostile file here kills the process with SIGSEGV
inside MuPDF's layout (measured: ~4,070 levels of HTML; any malformed FB2).
"""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.documents import formats, nesting
from ingestion.documents.parse import open_document
from ingestion.types import IngestError


def _html(body: str) -> bytes:
    return f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>".encode()


def _nested(tag: str, depth: int) -> bytes:
    return _html(f"<{tag}>" * depth + "deep" + f"</{tag}>" * depth)


def _epub(chapter: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr(
            "META-INF/container.xml",
            '<?xml version="1.0"?><container version="1.0" '
            'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" '
            'media-type="application/oebps-package+xml"/></rootfiles></container>',
        )
        zf.writestr(
            "OEBPS/content.opf",
            '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="2.0" '
            'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
            '<dc:title>t</dc:title><dc:identifier id="id">x</dc:identifier></metadata>'
            '<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/>'
            '</manifest><spine><itemref idref="c1"/></spine></package>',
        )
        zf.writestr("OEBPS/c1.xhtml", chapter)
    return buf.getvalue()


def _xhtml(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml">'
        f"<head><title>t</title></head><body>{body}</body></html>"
    ).encode()


def _fb2(body: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<FictionBook xmlns="http://www.gribuser.ru/xml/fictionbook/2.0"><description>'
        "<title-info><book-title>t</book-title><lang>en</lang></title-info></description>"
        f"<body><section><p>a</p>{body}</section></body></FictionBook>"
    ).encode()


def _open(tmp_path: Path, data: bytes, media_type: str) -> list[str]:
    path = tmp_path / "doc"
    path.write_bytes(data)
    with open_document(path, media_type, max_pages=5000) as doc:
        return [page.text for page in doc.pages()]


HOSTILE = {
    "div": (_nested("div", 5000), formats.HTML),
    "span": (_nested("span", 5000), formats.HTML),
    "b": (_nested("b", 5000), formats.HTML),
    "ul": (_nested("ul", 5000), formats.HTML),
    "unclosed div": (_html("<div>" * 5000), formats.HTML),
    # HTML5 opens <div/> as <div>: the slash means nothing on a non-void element.
    "self-closed div": (_html("<div/>" * 5000), formats.HTML),
    # No literal nesting: each <p> re-opens every formatting element left unclosed.
    "reopened formatting": (
        _html("".join(f'<p><b class="c{n}">x</p>' for n in range(5000))),
        formats.HTML,
    ),
    "epub chapter": (_epub(_xhtml("<div>" * 5000 + "x" + "</div>" * 5000)), formats.EPUB),
    "fb2 sections": (_fb2("<section>" * 5000 + "<p>x</p>" + "</section>" * 5000), formats.FB2),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_deep_markup_is_refused_before_mupdf(tmp_path: Path, name: str) -> None:
    data, media_type = HOSTILE[name]
    with pytest.raises(IngestError) as err:
        _open(tmp_path, data, media_type)
    assert err.value.code == "too_deeply_nested"
    assert str(nesting.MAX_DEPTH) in err.value.reason


@pytest.mark.timeout(60)
def test_malformed_fictionbook_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    # MuPDF segfaults on a FictionBook that is not well-formed XML, at any depth.
    with pytest.raises(IngestError) as err:
        _open(tmp_path, _fb2("</x><p>text</p>"), formats.FB2)
    assert err.value.code == "corrupt"
    assert "well-formed" in err.value.reason


@pytest.mark.timeout(60)
def test_depth_under_the_limit_still_parses(tmp_path: Path) -> None:
    # MuPDF itself drops text nested deeper than ~90 levels, but lays the page out.
    depth = nesting.MAX_DEPTH - 10
    assert len(_open(tmp_path, _nested("div", depth), formats.HTML)) >= 1
    fb2 = _fb2("<section>" * depth + "<p>deep</p>" + "</section>" * depth)
    assert len(_open(tmp_path, fb2, formats.FB2)) >= 1
    assert "deep" in "".join(_open(tmp_path, _nested("div", 50), formats.HTML))


FLAT = {
    # HTML5 closes these implicitly: thousands of them are siblings, not a tower.
    "unclosed p": _html("<p>para" * 10_000),
    "unclosed li": _html("<ul>" + "<li>item" * 10_000 + "</ul>"),
    "unclosed dt dd": _html("<dl>" + "<dt>term<dd>definition" * 5000 + "</dl>"),
    "table rows": _html("<table>" + "<tr><td>a<td>b" * 5000 + "</table>"),
    "table in table": _html("<table>" * 5000),
    "unclosed headings": _html("<h2>title<h3>sub" * 5000),
    # DocBook writes anchors as <a name="x"/>: in HTML5 each new <a> ends the last.
    "self-closed anchors": _html("".join(f'<p><a name="s{n}"/>text' for n in range(5000))),
    "void elements": _html("<br><img src=x><hr><input>" * 5000),
    "same formatting reopened": _html("<p><b>x</p>" * 10_000),
    "markup in comments and scripts": _html(
        "<!--" + "<div>" * 5000 + "-->" + "<script>" + "<div>" * 5000 + "</script>"
    ),
    "quoted > in attributes": _html('<a title="x > <div>">link</a>' * 5000),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(FLAT))
def test_flat_markup_passes(name: str) -> None:
    nesting.check_html([FLAT[name]])


@pytest.mark.timeout(60)
def test_xhtml_self_closed_elements_are_empty() -> None:
    # In an EPUB chapter parsed as XML, <a id="p1"/> anchors open nothing.
    nesting.check_html([_xhtml('<span id="x"/>' * 5000)], xml=True)
    with pytest.raises(IngestError):
        nesting.check_html([_xhtml('<span id="x">' * 5000)], xml=True)


@pytest.mark.timeout(60)
def test_markup_inside_quoted_values_hides_nothing() -> None:
    # A `>` in a quoted value does not end the tag, so the `<!--` after it opens
    # no comment that could hide the tower of divs from the scanner.
    data = _html('<div title="><!--">' + "<div>" * 5000 + "-->")
    with pytest.raises(IngestError) as err:
        nesting.check_html([data])
    assert err.value.code == "too_deeply_nested"


@pytest.mark.timeout(60)
def test_chunk_boundaries_do_not_hide_tags() -> None:
    data = _html('<div title = "><!--">' + "<div a='>'>" * 2000)
    with pytest.raises(IngestError) as err:
        nesting.check_html(data[i : i + 1] for i in range(len(data)))
    assert err.value.code == "too_deeply_nested"


@pytest.mark.timeout(60)
def test_corpus_html_and_epub_pass(corpus: Path) -> None:
    html = sorted((corpus / "html").glob("*.html"))
    epub = sorted((corpus / "epub").glob("*.epub"))
    assert len(html) >= 10 and len(epub) >= 7
    for path in html:
        nesting.check_markup(path, formats.HTML)
    for path in epub:
        nesting.check_markup(path, formats.EPUB)


def _repeat(unit: bytes, total: int) -> Iterator[bytes]:
    chunk = unit * (nesting.CHUNK_BYTES // len(unit))
    for _ in range(total // len(chunk)):
        yield chunk


# Shapes that make naive scanners rescan their buffer (quadratic) or keep it all.
SCANNER_TRAPS = {
    "tag never closed": (b"<", b"<div class=x "),
    "comment never closed": (b"<!--", b"<div> "),
    "quoted value never closed": (b'<a title="', b"<div> "),
    "raw text never closed": (b"<script>", b"<div> "),
    "lone angle brackets": (b"", b"< <"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(SCANNER_TRAPS))
def test_scanner_memory_does_not_grow_with_input(name: str) -> None:
    head, unit = SCANNER_TRAPS[name]
    total = 16 * 2**20
    tracemalloc.start()
    try:
        nesting.check_html([head, *_repeat(unit, total)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One chunk plus its carry-over, whatever the input size.
    assert peak < 4 * nesting.CHUNK_BYTES + 2**20, peak


@pytest.mark.timeout(60)
def test_epub_page_that_cannot_be_unpacked_is_corrupt(tmp_path: Path) -> None:
    chapter = _xhtml("".join(f"<p>{n * 7919 % 100_003}</p>" for n in range(3000)))
    data = bytearray(_epub(chapter))
    # Damage the compressed chapter (the last member) past its local header.
    at = data.rfind(b"OEBPS/c1.xhtml", 0, data.rfind(b"PK\x01\x02")) + 64
    data[at : at + 100] = bytes(100)
    with pytest.raises(IngestError) as err:
        _open(tmp_path, bytes(data), formats.EPUB)
    assert err.value.code == "corrupt"
    assert "cannot be unpacked" in err.value.reason
