"""Where the DOCX walker's text goes: pages cut as they fill, and text boxes
held back until their paragraph ends."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO, Protocol

from ingestion.documents.pagetext import SYNTHETIC_PAGE_CHARS

# A text box's pending text kept in memory before it goes to a temporary file.
SPILL_CHARS = 64 * 1024
_PAGE = SYNTHETIC_PAGE_CHARS


class Sink(Protocol):
    def add(self, text: str) -> None: ...
    def paragraph_end(self, sep: str) -> None: ...
    def page_break(self) -> None: ...


class Pages:
    """Fills one page at a time and hands each finished page to `emit`."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._parts: list[str] = []
        self._size = 0
        self._visible = False

    def add(self, text: str) -> None:
        if len(text) > _PAGE:  # one huge run: cut inside it, not after it
            for i in range(0, len(text), _PAGE):
                self.add(text[i : i + _PAGE])
            return
        self._parts.append(text)
        self._size += len(text)
        if not self._visible and text.strip():
            self._visible = True
        if self._size >= 2 * _PAGE:
            self.page_break()  # one giant paragraph: cut inside it

    def paragraph_end(self, sep: str) -> None:
        self.add(sep)
        if self._size >= _PAGE:
            self.page_break()

    def page_break(self) -> None:
        # Word writes an explicit break and a rendered break for the same
        # boundary; the blank page between them is one boundary, not a page.
        if self._visible:
            self._emit("".join(self._parts).strip("\n"))
        self._parts, self._size, self._visible = [], 0, False


_ADD, _END, _BREAK = "a", "e", "b"


class Deferred:
    """What a paragraph's text boxes say, replayed into its sink after the paragraph.

    Kept as a list of sink calls; past `SPILL_CHARS` they go to a temporary file
    as ``<op><10-digit length><text>`` records, so a huge box costs disk, not memory.
    """

    def __init__(self) -> None:
        self._ops: list[tuple[str, str]] = []
        self._chars = 0
        self._file: IO[str] | None = None

    def add(self, text: str) -> None:
        self._push(_ADD, text)

    def paragraph_end(self, sep: str) -> None:
        self._push(_END, sep)

    def page_break(self) -> None:
        self._push(_BREAK, "")

    def _push(self, op: str, text: str) -> None:
        self._ops.append((op, text))
        self._chars += len(text) + 32  # a tuple and two references, roughly
        if self._chars > SPILL_CHARS:
            if self._file is None:  # closed by replay(), or with the walker on an error
                self._file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115
            self._file.write("".join(f"{o}{len(t):010d}{t}" for o, t in self._ops))
            self._ops, self._chars = [], 0

    def replay(self, sink: Sink) -> None:
        if self._file is not None:
            self._file.seek(0)
            while header := self._file.read(11):
                _apply(sink, header[0], self._file.read(int(header[1:])))
            self._file.close()
            self._file = None
        for op, text in self._ops:
            _apply(sink, op, text)
        self._ops = []


def _apply(sink: Sink, op: str, text: str) -> None:
    if op == _ADD:
        sink.add(text)
    elif op == _END:
        sink.paragraph_end(text)
    else:
        sink.page_break()
