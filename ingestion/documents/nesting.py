"""Refusing markup nested deeper than MuPDF can lay out, before MuPDF sees it.

MuPDF builds and lays out HTML, XHTML and FictionBook trees recursively, on the
C stack: measured with PyMuPDF 1.28.2 and an 8 MiB stack, ~4,070 nested
``<div>``, ``<span>``, ``<b>`` or ``<ul>`` (a 25 KB file) kill the process
with SIGSEGV. The same depth can be reached without literal nesting: HTML5
re-opens unclosed formatting elements in every new paragraph, so 5,000
``<p><b class=cN>x</p>`` crash it too (and 20,000 take minutes). EPUB and XPS
stop at MuPDF's own XML limit with an error instead; a FictionBook that is not
well-formed XML crashes MuPDF at any depth. So every HTML page and EPUB
chapter is scanned here for an upper bound of the depth MuPDF's HTML5 parser
would build, and a FictionBook is checked as XML with expat.

The tags come from `tagscan` over fixed-size chunks: linear time, memory
bounded by a few hundred bytes per open element and at most `MAX_DEPTH` of
them. The tree models only what changes the depth: void elements, the end
tags HTML5 implies (``<p>``, ``<li>``, table parts, ...) and the list of
unclosed formatting elements, each counted once even while it is also open,
so the estimate errs high, never low.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO
from xml.parsers import expat

from ingestion.documents import formats
from ingestion.documents.tagscan import TagScanner
from ingestion.types import IngestError

# Well below the ~4,070 that crash MuPDF; the estimate on the corpus is at most
# 19 for HTML pages and 18 for EPUB chapters.
MAX_DEPTH = 1000
CHUNK_BYTES = 64 * 1024

_VOID = frozenset(
    b"area base basefont bgsound br col embed frame hr img input keygen link meta "
    b"param source track wbr".split()
)
_FORMATTING = frozenset(b"a b big code em font i nobr s small strike strong tt u".split())
# A start tag of these closes an open <p> (HTML5 "in body" insertion mode).
_CLOSES_P = frozenset(
    b"address article aside blockquote center details dialog dir div dl fieldset "
    b"figcaption figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr main menu nav "
    b"ol p pre section summary table ul li dd dt plaintext listing xmp".split()
)
# A new one of these ends the one still open (HTML5 does not nest them).
_ONE_OPEN = frozenset((b"a", b"nobr"))
_HEADINGS = frozenset(b"h1 h2 h3 h4 h5 h6".split())
_SCOPE = frozenset(b"applet caption html table td th marquee object template".split())
# Start tags that close the named open elements, HTML5 stopping at a scope boundary.
_IMPLIED: dict[bytes, tuple[bytes, ...]] = {
    b"li": (b"li",),
    b"dd": (b"dd", b"dt"),
    b"dt": (b"dd", b"dt"),
    b"tr": (b"tr",),
    b"td": (b"td", b"th"),
    b"th": (b"td", b"th"),
    b"tbody": (b"tbody", b"thead", b"tfoot"),
    b"thead": (b"tbody", b"thead", b"tfoot"),
    b"tfoot": (b"tbody", b"thead", b"tfoot"),
    b"option": (b"option",),
    b"optgroup": (b"option", b"optgroup"),
    b"button": (b"button",),
    b"a": (b"a",),
    b"nobr": (b"nobr",),
}
# A new table part closes the enclosing cell or row; a table directly inside a table closes it.
_TABLE_PARTS = {b"tr": (b"td", b"th"), b"tbody": (b"tr", b"td", b"th"), b"table": (b"table",)}
_EPUB_PAGES = (".xhtml", ".html", ".htm", ".xml")


def too_deep(depth: int) -> IngestError:
    return IngestError(
        "too_deeply_nested",
        f"the markup nests elements more than {MAX_DEPTH} deep (at {depth} when refused); "
        "no real document needs that, and the layout engine cannot handle it",
    )


class _Tree:
    """The open elements and unclosed formatting elements of an HTML5 parse, roughly."""

    def __init__(self, xml: bool) -> None:
        self.xml = xml  # `<x/>` is empty in XHTML; in HTML5 it opens x
        self.stack: list[bytes] = []
        self.where: dict[bytes, list[int]] = {}
        self.scopes: list[int] = []  # positions of scope boundaries
        # Unclosed formatting elements by name, as (attributes, count up to 3 alike:
        # HTML5's "Noah's ark"); `unclosed` is their total.
        self.formatting: dict[bytes, list[bytes]] = {}
        self.alike: dict[tuple[bytes, bytes], int] = {}
        self.unclosed = 0
        self.foreign = 0  # open svg/math: `<x/>` is empty there

    def _in_scope(self, name: bytes) -> int:
        at = self.where.get(name)
        if not at:
            return -1
        boundary = self.scopes[-1] if self.scopes else -1
        return at[-1] if at[-1] >= boundary else -1

    def _pop_to(self, index: int) -> None:
        while len(self.stack) > index:
            name = self.stack.pop()
            self.where[name].pop()
            if name in _SCOPE:
                self.scopes.pop()
            elif name in (b"svg", b"math"):
                self.foreign -= 1

    def _close(self, names: Iterable[bytes]) -> None:
        found = -1
        for name in names:
            if self.where.get(name):
                found = max(found, self._in_scope(name))
        if found >= 0:
            self._pop_to(found)

    def start(self, name: bytes, attrs: bytes, empty: bool) -> None:  # noqa: C901
        if name in _VOID:
            return
        if not self.xml and not self.foreign:
            if name in _CLOSES_P:
                self._close((b"p",))
            if name in _HEADINGS and self.stack and self.stack[-1] in _HEADINGS:
                self._pop_to(len(self.stack) - 1)
            self._close(_TABLE_PARTS.get(name, ()))
            self._close(_IMPLIED.get(name, ()))
            if name in _FORMATTING:
                if name in _ONE_OPEN:
                    self._forget(name)  # the adoption agency closes the earlier one
                self._remember(name, attrs)
            empty = False  # HTML5 ignores the slash of a non-void HTML element
        if empty:
            return
        self.where.setdefault(name, []).append(len(self.stack))
        if name in _SCOPE:
            self.scopes.append(len(self.stack))
        elif name in (b"svg", b"math"):
            self.foreign += 1
        self.stack.append(name)
        depth = len(self.stack) + self.unclosed
        if depth > MAX_DEPTH:
            raise too_deep(depth)

    def _remember(self, name: bytes, attrs: bytes) -> None:
        key = (name, attrs)
        if self.alike.get(key, 0) < 3:
            self.alike[key] = self.alike.get(key, 0) + 1
            self.formatting.setdefault(name, []).append(attrs)
            self.unclosed += 1

    def _forget(self, name: bytes) -> None:
        attrs = self.formatting.get(name)
        if attrs:
            key = (name, attrs.pop())
            self.alike[key] -= 1
            self.unclosed -= 1

    def end(self, name: bytes) -> None:
        if not self.xml:
            self._forget(name)
        at = self.where.get(name)
        if at:
            self._pop_to(at[-1])


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


def check_html(chunks: Iterable[bytes], *, xml: bool = False) -> None:
    """Raise `too_deeply_nested` if `chunks` of HTML (or XHTML, `xml`) nest too deep."""
    scanner = TagScanner(_Tree(xml))
    for chunk in chunks:
        scanner.feed(chunk)


def check_html_file(path: Path) -> None:
    with path.open("rb") as f:
        check_html(_chunks(f))


def check_epub(path: Path) -> None:
    """Every (X)HTML member of an EPUB, as MuPDF reads them: as XML first."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.lower().endswith(_EPUB_PAGES):
                    with zf.open(info) as member:
                        check_html(_chunks(member), xml=True)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise IngestError("corrupt", f"a page of the EPUB cannot be unpacked: {exc}") from exc


def check_xml_file(path: Path) -> None:
    """A FictionBook must be well-formed XML: MuPDF crashes on one that is not."""
    depth = 0

    def start(_name: str, _attrs: object) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise too_deep(depth)

    def end(_name: str) -> None:
        nonlocal depth
        depth -= 1

    parser = expat.ParserCreate()
    # An external DTD that is never read makes undefined entities (&nbsp;) legal.
    parser.UseForeignDTD(True)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        with path.open("rb") as f:
            for chunk in _chunks(f):
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise IngestError("corrupt", f"the file is not well-formed XML: {exc}") from exc


def check_markup(path: Path, media_type: str) -> None:
    """The depth check for the formats MuPDF lays out as a tree (others pass)."""
    if media_type == formats.HTML:
        check_html_file(path)
    elif media_type == formats.EPUB:
        check_epub(path)
    elif media_type == formats.FB2:
        check_xml_file(path)
