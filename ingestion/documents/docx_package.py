"""A DOCX package read straight from its ZIP: its relationships lead to the main part,
the notes, the core properties and the styles, and the metadata (title, author,
language) is read from the last two, each part streamed (`docx_xml`)."""

from __future__ import annotations

import contextlib
import posixpath
import zipfile
from urllib.parse import unquote

from ingestion.documents.docx_xml import MAX_DEPTH, Events, W, feed, too_deep
from ingestion.types import IngestError

_REL_NS = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_OFFICE_RT = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
_MAIN = _OFFICE_RT + "officeDocument"
_CORE = "http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties"
_STYLES, _FOOTNOTES, _ENDNOTES = (_OFFICE_RT + t for t in ("styles", "footnotes", "endnotes"))
_WANTED = frozenset({_MAIN, _CORE, _STYLES, _FOOTNOTES, _ENDNOTES})
_DC = "{http://purl.org/dc/elements/1.1/}"
_CORE_FIELDS = {f"{_DC}title": "title", f"{_DC}creator": "author", f"{_DC}language": "language"}
# Metadata is a line or two; a hostile core.xml does not get more than this kept.
_FIELD_CHARS = 4096
_LANG_PATH = [f"{W}{t}" for t in ("docDefaults", "rPrDefault", "rPr", "lang")]
# Parts of one relationship type that are read (Word writes one of each).
_PER_TYPE = 4


class _Part(Events):
    """Target for a small part: `depth` kept, and capped as for the body (libxml2's
    own stack grows with depth too, and checks none for a parser target)."""

    def __init__(self) -> None:
        self.depth = 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            too_deep()
        self.opened(tag, attrib)

    def end(self, tag: str) -> None:
        self.closed(tag)
        self.depth -= 1

    def opened(self, tag: str, attrib: dict[str, str]) -> None: ...

    def closed(self, tag: str) -> None: ...


class _Rels(_Part):
    """The internal targets of the relationship types we read, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: dict[str, list[str]] = {t: [] for t in _WANTED}

    def opened(self, tag: str, attrib: dict[str, str]) -> None:
        kind, target = attrib.get("Type"), attrib.get("Target")
        if tag != _REL_NS or kind not in self.targets or not target:
            return
        if attrib.get("TargetMode") != "External" and len(self.targets[kind]) < _PER_TYPE:
            self.targets[kind].append(target)


class _Core(_Part):
    """Title, author and language: the direct text of dc:title, dc:creator, dc:language."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self._field: str | None = None
        self._parts: list[str] = []

    def opened(self, tag: str, attrib: dict[str, str]) -> None:
        self._stop()
        if self.depth == 2:
            self._field = _CORE_FIELDS.get(tag)

    def data(self, data: str) -> None:
        if self._field is not None and sum(map(len, self._parts)) < _FIELD_CHARS:
            self._parts.append(data)

    def closed(self, tag: str) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._field is not None:
            self.fields.setdefault(self._field, "".join(self._parts)[:_FIELD_CHARS].strip())
        self._field, self._parts = None, []


class _Found(Exception):
    pass


class _StyleLanguage(_Part):
    """``w:docDefaults/w:rPrDefault/w:rPr/w:lang/@w:val`` of styles.xml, then stop."""

    def __init__(self) -> None:
        super().__init__()
        self.value: str | None = None
        self._path: list[str] = []

    def opened(self, tag: str, attrib: dict[str, str]) -> None:
        if not 1 < self.depth <= len(_LANG_PATH) + 1:
            return  # the root, or deeper than the path
        del self._path[self.depth - 2 :]  # keep the ancestors below the root
        self._path.append(tag)
        if self._path == _LANG_PATH:
            self.value = attrib.get(f"{W}val") or None
            raise _Found

    def closed(self, tag: str) -> None:
        if self.depth == 2 and tag == _LANG_PATH[0]:
            raise _Found  # the defaults come first; nothing later can hold them


def _resolve(source: str, target: str) -> str:
    """The ZIP member a relationship of part `source` points to (OPC: relative to its folder)."""
    name = posixpath.join("/" + posixpath.dirname(source), unquote(target.split("#", 1)[0]))
    return posixpath.normpath(name).lstrip("/")


def _rels_of(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


class Package:
    """The parts of a DOCX package that are read, found through its relationships."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self._zf = zf
        self._names = set(zf.namelist())
        main = self._related("", _MAIN)
        if not main:
            raise IngestError("corrupt", "the Word document has no main document part")
        self.main = main[0]
        rels = self._rels(self.main)
        self.notes = [
            (part, tag)
            for rt, tag in ((_FOOTNOTES, "footnote"), (_ENDNOTES, "endnote"))
            for part in dict.fromkeys(self._existing(self.main, rels[rt]))
        ]
        self.core = self._related("", _CORE)
        self.styles = self._existing(self.main, rels[_STYLES])

    def _rels(self, source: str) -> dict[str, list[str]]:
        rels = _Rels()
        name = _rels_of(source) if source else "_rels/.rels"
        if name in self._names:
            self.parse(name, rels)
        return rels.targets

    def _related(self, source: str, kind: str) -> list[str]:
        return self._existing(source, self._rels(source)[kind])

    def _existing(self, source: str, targets: list[str]) -> list[str]:
        # A part named but absent is skipped, as if the relationship were not there.
        return [p for p in (_resolve(source, t) for t in targets) if p in self._names]

    def parse(self, part: str, events: Events) -> None:
        with self._zf.open(part) as stream:
            feed(stream, events)

    def metadata(self) -> tuple[dict[str, str], str | None]:
        core = _Core()
        if self.core:
            self.parse(self.core[0], core)
        language = core.fields.get("language") or None
        if language is None and self.styles:
            styles = _StyleLanguage()
            with contextlib.suppress(_Found):
                self.parse(self.styles[0], styles)
            language = styles.value
        return core.fields, language
