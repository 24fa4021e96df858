"""A tokenizer that finds only tags, fed chunk by chunk: each byte is looked at once.

It reports start tags (name, the first `KEY_BYTES` of their attributes, and
whether they end in ``/>``) and end tags to a `TagSink`, and skips comments,
doctypes, processing instructions and raw text (``<script>``, ``<style>``, ...).
A value is quoted only right after ``=``, as in HTML5, so a stray quote cannot
hide the tags that follow. Each state consumes all it can and keeps what it
needs of a tag in fields: what is carried to the next chunk is a few bytes,
never a whole tag, so time is linear and memory bounded whatever the input.
"""

from __future__ import annotations

import re
from typing import Protocol

# Attribute bytes kept per formatting element (HTML5 re-opens up to three alike).
KEY_BYTES = 256
# Elements whose content is text up to their own end tag.
RAW = frozenset(b"script style textarea title xmp iframe noembed noframes".split())
_NAME_CHARS = re.compile(rb"[^\s/>]+")
_SPACE = re.compile(rb"\s+")
# A tag ends at `>` outside a quoted value; a value is quoted only right after `=`.
_TAG_END = re.compile(rb">|=\s*[\"']|=\s*\Z")
# Where markup may start: a lone `<` is text (searched in C, not looped over).
_MARKUP = re.compile(rb"<[A-Za-z/!?]")
# A whole tag in one match when it is short and plain; the states handle the rest.
# The alternatives start with different bytes, so the match cannot backtrack far.
_WHOLE_TAG = re.compile(
    rb"<(/?)([A-Za-z][^\s/>]*)((?:[^>\"'=]|=\s*\"[^\"]*\"|=\s*'[^']*'|=(?=\s*[^\s\"']))*)>"
)
_FAST_BYTES = 4096


class TagSink(Protocol):
    xml: bool  # XHTML: `<x/>` is empty and <script> content is markup

    def start(self, name: bytes, attrs: bytes, empty: bool) -> None: ...

    def end(self, name: bytes) -> None: ...


class TagScanner:
    """Feed it chunks; `state` is the method that reads the next bytes."""

    def __init__(self, tree: TagSink) -> None:
        self.tree = tree
        self.carry = b""
        self.state = self._text
        self.closing = False
        self.name = b""
        self.attrs = b""
        self.last = b""  # the byte before a tag's `>`: `/` makes `<x/>`
        self.quote = b""
        self.raw: re.Pattern[bytes] | None = None
        self.unique = 0

    def feed(self, data: bytes) -> None:
        buf = self.carry + data
        pos = 0
        while True:
            state = self.state
            step = state(buf, pos)
            if step == pos and self.state == state:
                break  # this state needs more bytes
            pos = step
        self.carry = buf[pos:]

    def _text(self, buf: bytes, pos: int) -> int:
        found = _MARKUP.search(buf, pos)
        if found is None:
            return max(pos, len(buf) - 1) if buf.endswith(b"<") else len(buf)
        at = found.start()
        if len(buf) - at < 4:
            return at  # wait for the bytes that tell a comment from a tag
        if buf.startswith(b"<!--", at):
            self.state = self._comment
            return at + 4
        whole = _WHOLE_TAG.match(buf, at, min(len(buf), at + _FAST_BYTES))
        if whole is not None:
            closing, name, attrs = whole.groups()
            self.closing = bool(closing)
            self.name, self.attrs = name[:64], attrs[: KEY_BYTES + 1]
            self.last = attrs[-1:]
            self._finish()
            return whole.end()
        second = buf[at + 1 : at + 2]
        third = buf[at + 2 : at + 3]
        if second == b"/" and third.isalpha():
            self._begin_tag(closing=True)
            return at + 2
        if second.isalpha():
            self._begin_tag(closing=False)
            return at + 1
        if second in (b"!", b"?", b"/"):
            self.state = self._bogus
            return at + 2
        return at + 1

    def _begin_tag(self, closing: bool) -> None:
        self.closing = closing
        self.name = self.attrs = self.last = b""
        self.state = self._name

    def _comment(self, buf: bytes, pos: int) -> int:
        at = buf.find(b"-->", pos)
        if at < 0:
            return max(pos, len(buf) - 2)
        self.state = self._text
        return at + 3

    def _bogus(self, buf: bytes, pos: int) -> int:
        at = buf.find(b">", pos)
        if at < 0:
            return len(buf)
        self.state = self._text
        return at + 1

    def _name(self, buf: bytes, pos: int) -> int:
        match = _NAME_CHARS.match(buf, pos)
        end = match.end() if match else pos
        if len(self.name) < 64:
            self.name += buf[pos:end]
        if end < len(buf):
            self.state = self._attrs
        return end

    def _keep(self, chunk: bytes) -> None:
        if chunk:
            self.last = chunk[-1:]
            if len(self.attrs) <= KEY_BYTES:
                self.attrs += chunk[: KEY_BYTES + 1 - len(self.attrs)]

    def _attrs(self, buf: bytes, pos: int) -> int:
        match = _TAG_END.search(buf, pos)
        if match is None:
            self._keep(buf[pos:])
            return len(buf)
        at = match.start()
        self._keep(buf[pos:at])
        if buf[at : at + 1] == b">":
            self._finish()
            return at + 1
        self._keep(b"=")
        self.state = self._value  # skips the spaces (maybe split by a chunk) to the quote
        return at + 1

    def _value(self, buf: bytes, pos: int) -> int:
        match = _SPACE.match(buf, pos)
        end = match.end() if match else pos
        if end == len(buf):
            return end
        char = buf[end : end + 1]
        if char in (b'"', b"'"):
            self._keep(char)
            self.quote = char
            self.state = self._quoted
            return end + 1
        self.state = self._attrs
        return end

    def _quoted(self, buf: bytes, pos: int) -> int:
        at = buf.find(self.quote, pos)
        if at < 0:
            self._keep(buf[pos:])
            return len(buf)
        self._keep(buf[pos : at + 1])
        self.state = self._attrs
        return at + 1

    def _raw_text(self, buf: bytes, pos: int) -> int:
        assert self.raw is not None
        match = self.raw.search(buf, pos)
        if match is None:
            return max(pos, len(buf) - 16)
        self._begin_tag(closing=True)
        return match.start() + 2

    def _finish(self) -> None:
        name = self.name.lower()
        self.state = self._text
        if self.closing:
            self.tree.end(name)
            return
        if len(self.attrs) > KEY_BYTES:
            # Too long to compare: never taken as alike, so the estimate stays high.
            self.unique += 1
            self.attrs = b"\0%d" % self.unique
        empty = self.last == b"/"
        self.tree.start(name, self.attrs, empty)
        if name in RAW and not (empty and self.tree.xml):
            self.raw = re.compile(rb"</" + re.escape(name) + rb"[\s/>]", re.I)
            self.state = self._raw_text
        elif name == b"plaintext" and not self.tree.xml:
            self.state = self._plaintext

    def _plaintext(self, buf: bytes, pos: int) -> int:
        return len(buf)
