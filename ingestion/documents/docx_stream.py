"""WordprocessingML text in one pass over the XML stream, in bounded memory.

lxml's parser-target interface (`docx_xml`) hands us start/end/data events and
builds no tree, so memory does not grow with the part's size. What is held: the
stack of open elements (refused past `MAX_DEPTH`: libxml2 checks no depth for a
parser target), the page being filled (under 3 x `SYNTHETIC_PAGE_CHARS`) and
text boxes waiting for their paragraph's end (on disk past
`docx_pages.SPILL_CHARS`); no one event is big, as libxml2 refuses a token over
~10 MB (a start tag with millions of attributes, say).

What is read is what the tree walk before it read (see `docx_doc`): body
paragraphs in order; tables a row per line with cells separated by tabs and
each ``w:tc`` once (merged cells are one element); text boxes after the
paragraph that anchors them, the ``mc:Fallback`` copy skipped; deleted text,
field codes and properties skipped; notes as ``[id] text``. Pages end at
Word's page breaks (``w:br type=page``, ``lastRenderedPageBreak``, a section
break that is not continuous), else at the first paragraph end after
`SYNTHETIC_PAGE_CHARS`, and inside a paragraph at twice that. A page holding
only whitespace is dropped at its break, whitespace and all.
"""

from __future__ import annotations

from ingestion.documents.docx_pages import Deferred, Sink
from ingestion.documents.docx_xml import MAX_DEPTH, Events, W, too_deep
from ingestion.documents.pagetext import SYNTHETIC_PAGE_CHARS

_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_MATH_TEXT = "{http://schemas.openxmlformats.org/officeDocument/2006/math}t"
_PAGE = SYNTHETIC_PAGE_CHARS

_CONTAINERS = frozenset(
    {f"{W}{t}" for t in ("hyperlink", "ins", "moveTo", "smartTag", "fldSimple", "customXml")}
    | {f"{W}sdt", f"{W}sdtContent", f"{_MC}AlternateContent", f"{_MC}Choice"}
)
_SKIPPED = frozenset(
    {f"{W}{t}" for t in ("del", "moveFrom", "rPr", "pPr", "instrText", "delText")}
    | {f"{_MC}Fallback"}
)
_CHARS = {f"{W}tab": "\t", f"{W}cr": "\n", f"{W}noBreakHyphen": "-"}
_DRAWINGS = frozenset({f"{W}drawing", f"{W}pict"})
_SEPARATOR_NOTES = frozenset({"separator", "continuationSeparator"})
_P, _TBL, _TR, _TC = f"{W}p", f"{W}tbl", f"{W}tr", f"{W}tc"
_BR, _RENDERED_BREAK, _BOX = f"{W}br", f"{W}lastRenderedPageBreak", f"{W}txbxContent"
_PPR, _SECTPR, _TYPE, _BODY = f"{W}pPr", f"{W}sectPr", f"{W}type", f"{W}body"
_VAL, _ID = f"{W}val", f"{W}id"
# What an element means inside a paragraph; anything not listed is looked into.
_GENERIC, _SKIP, _RUN_TEXT, _PROPS, _CHAR, _LINE_BREAK, _PAGE_BREAK, _NOTE_REF = range(8)
_TEXT_BOX, _DRAWING = 8, 9
_INLINE_CODES = {
    **dict.fromkeys(_SKIPPED, _SKIP),
    **dict.fromkeys(_CHARS, _CHAR),
    **dict.fromkeys(_DRAWINGS, _DRAWING),
    f"{W}t": _RUN_TEXT,
    _MATH_TEXT: _RUN_TEXT,
    _PPR: _PROPS,
    _BR: _LINE_BREAK,
    _RENDERED_BREAK: _PAGE_BREAK,
    f"{W}footnoteReference": _NOTE_REF,
    f"{W}endnoteReference": _NOTE_REF,
    _BOX: _TEXT_BOX,
}


# Frame kinds: what the children of an open element mean.
_BLOCKS, _PARA, _INLINE, _TEXTRUN, _PPR_K, _SECT, _TABLE, _ROW, _CELL, _ROOT = range(10)


class _Frame:
    __slots__ = (
        "boxes",
        "cell",
        "count",
        "inline",
        "kind",
        "para",
        "pending",
        "run",
        "sect",
        "sect_type",
        "sink",
    )

    def __init__(self, kind: int, sink: Sink, para: _Frame | None = None) -> None:
        self.kind = kind
        self.sink = sink
        self.para = para  # the paragraph whose text boxes this inline content would hold
        self.boxes: Deferred | None = None
        self.cell: _Frame | None = None  # for a paragraph right inside a table cell
        self.count = 0  # cells seen, for a row
        self.pending: _Frame | None = None  # a cell's last paragraph, waiting for its separator
        self.sect = False
        self.sect_type: str | None = None
        # A paragraph's runs, hyperlinks, w:t ... share these two frames: nothing
        # about them differs, and a run is the commonest element there is.
        self.inline: _Frame | None = None
        self.run: _Frame | None = None


class WordText(Events):
    """Parser target for ``document.xml`` (root ``w:document``) or a notes part.

    `note_tag` is ``footnote`` or ``endnote`` for a notes part, None for the body.
    """

    def __init__(self, out: Sink, note_tag: str | None = None) -> None:
        self.has_drawings = False
        self._out = out
        self._note = f"{W}{note_tag}" if note_tag else None
        self._stack: list[_Frame] = []
        self._skip = 0  # depth inside a subtree whose content is not text
        self._text: list[str] | None = None  # the open w:t's text, while it is direct
        self._text_len = 0
        self._body_seen = False

    def data(self, data: str) -> None:
        if self._text is not None and not self._skip:
            self._text.append(data)
            self._text_len += len(data)
            if self._text_len > _PAGE:
                self._stack[-1].sink.add("".join(self._text))
                self._text, self._text_len = [], 0

    def start(self, tag: str, attrib: dict[str, str]) -> None:  # noqa: C901
        if self._skip:
            self._skip += 1
            if self._skip > MAX_DEPTH:
                too_deep()
            return
        if len(self._stack) >= MAX_DEPTH:
            too_deep()
        if not self._stack:
            self._stack.append(_Frame(_ROOT, self._out))
            return
        top = self._stack[-1]
        kind = top.kind
        if kind in (_PARA, _INLINE):
            self._inline(top, tag, attrib)
        elif kind == _BLOCKS:
            self._block(top.sink, tag)
        elif kind == _CELL:
            if top.pending is not None:  # the cell goes on: its paragraph ends with a space
                _finish_paragraph(top.pending, " ")
                top.pending = None
            if tag == _P:
                para = _Frame(_PARA, top.sink)
                para.cell = top
                self._stack.append(para)
            elif tag == _TBL:
                self._stack.append(_Frame(_TABLE, top.sink))
            elif tag == f"{W}sdt":
                self._stack.append(_Frame(_BLOCKS, top.sink))
            else:
                self._skip = 1
        elif kind == _ROW:
            if tag == _TC:
                if top.count:
                    top.sink.add("\t")
                top.count += 1
                self._stack.append(_Frame(_CELL, top.sink))
            else:
                self._skip = 1
        elif kind == _TABLE:
            if tag == _TR:
                self._stack.append(_Frame(_ROW, top.sink))
            else:
                self._skip = 1
        elif kind == _PPR_K:
            owner = top.para
            assert owner is not None
            if tag == _SECTPR:
                owner.sect = True
                self._stack.append(_Frame(_SECT, top.sink, owner))
            else:
                self._skip = 1
        elif kind == _SECT:
            owner = top.para
            assert owner is not None
            if tag == _TYPE and owner.sect_type is None:
                owner.sect_type = attrib.get(_VAL, "")
            self._skip = 1
        elif kind == _ROOT:
            self._root_child(top.sink, tag, attrib)
        else:  # inside w:t: a child element ends the direct text (the tree walk read .text)
            self._text_stop()
            self._skip = 1

    def _root_child(self, sink: Sink, tag: str, attrib: dict[str, str]) -> None:
        if self._note is None:
            if tag == _BODY and not self._body_seen:
                self._body_seen = True
                self._stack.append(_Frame(_BLOCKS, sink))
            else:
                self._skip = 1
        elif tag == self._note and attrib.get(f"{W}type") not in _SEPARATOR_NOTES:
            sink.add(f"[{attrib.get(_ID)}] ")
            self._stack.append(_Frame(_BLOCKS, sink))
        else:
            self._skip = 1

    def _block(self, sink: Sink, tag: str) -> None:
        if tag == _P:
            self._stack.append(_Frame(_PARA, sink))
        elif tag == _TBL:
            self._stack.append(_Frame(_TABLE, sink))
        elif tag in _CONTAINERS:
            self._stack.append(_Frame(_BLOCKS, sink))
        else:
            self._skip = 1

    def _inline(self, top: _Frame, tag: str, attrib: dict[str, str]) -> None:  # noqa: C901
        para = top if top.kind == _PARA else top.para
        assert para is not None
        code = _INLINE_CODES.get(tag, _GENERIC)
        if code == _GENERIC:
            if para.inline is None:
                para.inline = _Frame(_INLINE, para.sink, para)
            self._stack.append(para.inline)
        elif code == _SKIP:
            self._skip = 1
        elif code == _RUN_TEXT:
            if para.run is None:
                para.run = _Frame(_TEXTRUN, para.sink)
            self._stack.append(para.run)
            self._text, self._text_len = [], 0
        elif code == _PROPS:
            if top.kind == _PARA:
                self._stack.append(_Frame(_PPR_K, para.sink, para))
            else:
                self._skip = 1
        elif code == _CHAR:
            para.sink.add(_CHARS[tag])
            self._skip = 1
        elif code == _LINE_BREAK:
            if attrib.get(f"{W}type") == "page":
                para.sink.page_break()
            else:
                para.sink.add("\n")
            self._skip = 1
        elif code == _PAGE_BREAK:
            para.sink.page_break()
            self._skip = 1
        elif code == _NOTE_REF:
            para.sink.add(f"[{attrib.get(_ID)}]")
            self._skip = 1
        elif code == _TEXT_BOX:
            if para.boxes is None:
                para.boxes = Deferred()
            self._stack.append(_Frame(_BLOCKS, para.boxes))
        else:  # a drawing: its text boxes, if any, are read; it marks a picture otherwise
            self.has_drawings = True
            if para.inline is None:
                para.inline = _Frame(_INLINE, para.sink, para)
            self._stack.append(para.inline)

    def _text_stop(self) -> None:
        if self._text is not None:
            self._stack[-1].sink.add("".join(self._text))
            self._text = None

    def end(self, tag: str) -> None:  # noqa: C901
        if self._skip:
            self._skip -= 1
            return
        frame = self._stack.pop()
        kind = frame.kind
        if kind == _INLINE:
            return
        if kind == _TEXTRUN:
            if self._text is not None:
                frame.sink.add("".join(self._text))
                self._text = None
            else:
                frame.sink.add("")  # the text stopped at a child; the size check still runs
        elif kind == _PARA:
            if frame.cell is not None:
                frame.cell.pending = frame  # its separator depends on what follows in the cell
            else:
                _finish_paragraph(frame, "\n")
        elif kind == _CELL:
            if frame.pending is not None:
                _finish_paragraph(frame.pending, "")
        elif kind == _ROW:
            if frame.count:
                frame.sink.add("")
            frame.sink.paragraph_end("\n")


def _finish_paragraph(para: _Frame, sep: str) -> None:
    para.sink.paragraph_end(sep)
    if para.boxes is not None:
        para.boxes.replay(para.sink)
        para.boxes = None
    if para.sect and para.sect_type != "continuous":
        para.sink.page_break()
