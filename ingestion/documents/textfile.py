"""The extracted text as one UTF-8 file, plus a page map to find pages in it.

Pages are written in order, joined by `PAGE_SEPARATOR` (a blank line: it
keeps paragraphs from running together when the whole text goes to a model,
and costs a single token). It stands only between two pages that have text,
so empty pages add nothing. The separator belongs to no page. Each
`PageSpan` gives a page's place twice: as character offsets into the whole
text (for prompts and citations) and as byte offsets into the file (for
seeking). Offsets are relative to where writing began, which should be the
start of the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from ingestion.types import PageText

PAGE_SEPARATOR = "\n\n"
_SEPARATOR_BYTES = PAGE_SEPARATOR.encode("utf-8")
_SURROGATES = re.compile("[\ud800-\udfff]")
# On the stripped spec, so no two whitespace runs can meet around an empty match: with
# "\s*([0-9]*)\s*" the engine tried every split of a run of spaces ("1-", 20,000
# spaces and an "x" took 28 s, quadratic in a query parameter).
_RANGE = re.compile(r"([0-9]+)\s*(?:(-)\s*([0-9]*))?")

SpanJSON = list[int | list[str]]


@dataclass(frozen=True, slots=True)
class PageSpan:
    """Where page `number` lies: text[char_start:char_end], file[byte_start:byte_end]."""

    number: int
    char_start: int
    char_end: int
    byte_start: int
    byte_end: int
    warnings: tuple[str, ...] = ()


def write_pages(
    pages: Iterable[PageText],
    out: BinaryIO,
    *,
    on_page: Callable[[PageText], None] | None = None,
) -> list[PageSpan]:
    """Write `pages` to `out` as UTF-8 and return their spans.

    `on_page` is called after each page is written (progress, heartbeats).
    Lone surrogates become U+FFFD, one character for one, so offsets hold.
    """
    spans: list[PageSpan] = []
    chars = 0
    position = 0
    for page in pages:
        text = _SURROGATES.sub("\ufffd", page.text)
        # Separators only between pages that have text: a scan's blank pages add
        # nothing, so an image-only document is the empty string and zero tokens.
        if text and chars:
            out.write(_SEPARATOR_BYTES)
            chars += len(PAGE_SEPARATOR)
            position += len(_SEPARATOR_BYTES)
        data = text.encode("utf-8")
        out.write(data)
        spans.append(
            PageSpan(
                number=page.number,
                char_start=chars,
                char_end=chars + len(text),
                byte_start=position,
                byte_end=position + len(data),
                warnings=tuple(page.warnings),
            )
        )
        chars += len(text)
        position += len(data)
        if on_page is not None:
            on_page(page)
    return spans


def read_pages(
    f: BinaryIO, spans: Sequence[PageSpan], first: int, last: int
) -> Iterator[tuple[PageSpan, str]]:
    """Yield (span, text) for pages `first`..`last`, reading only their bytes.

    The range is checked before anything is read, so errors come at the call.
    """
    by_number = {span.number: span for span in spans}
    if first > last:
        raise ValueError(f"first page {first} is after last page {last}")
    missing = [n for n in range(first, last + 1) if n not in by_number]
    if missing:
        raise ValueError(f"page {missing[0]} is not in the page map")
    return _read(f, [by_number[n] for n in range(first, last + 1)])


def _read(f: BinaryIO, spans: list[PageSpan]) -> Iterator[tuple[PageSpan, str]]:
    for span in spans:
        number = span.number
        f.seek(span.byte_start)
        data = f.read(span.byte_end - span.byte_start)
        if len(data) != span.byte_end - span.byte_start:
            raise ValueError(f"the text file ends inside page {number}")
        yield span, data.decode("utf-8")


def spans_to_json(spans: Sequence[PageSpan]) -> list[SpanJSON]:
    """Compact form for a JSON column: ``[number, cs, ce, bs, be]`` plus warnings if any."""
    rows: list[SpanJSON] = []
    for s in spans:
        row: SpanJSON = [s.number, s.char_start, s.char_end, s.byte_start, s.byte_end]
        if s.warnings:
            row.append(list(s.warnings))
        rows.append(row)
    return rows


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"bad page map value {value!r}")
    return value


def spans_from_json(data: object) -> list[PageSpan]:
    """Inverse of `spans_to_json`; raises ValueError on anything malformed."""
    if not isinstance(data, list):
        raise ValueError("a page map must be a list")
    spans: list[PageSpan] = []
    for row in data:
        if not isinstance(row, list) or len(row) not in (5, 6):
            raise ValueError(f"bad page map row {row!r}")
        warnings: tuple[str, ...] = ()
        if len(row) == 6:
            if not isinstance(row[5], list) or not all(isinstance(w, str) for w in row[5]):
                raise ValueError(f"bad page map warnings {row[5]!r}")
            warnings = tuple(row[5])
        number, cs, ce, bs, be = (_int(v) for v in row[:5])
        if cs > ce or bs > be:
            raise ValueError(f"bad page map row {row!r}")
        spans.append(PageSpan(number, cs, ce, bs, be, warnings))
    return spans


def parse_page_range(spec: str, page_count: int) -> tuple[int, int]:
    """``"5"`` -> (5, 5), ``"3-7"`` -> (3, 7), ``"3-"`` -> (3, page_count); 1-based, inclusive."""
    match = _RANGE.fullmatch(spec.strip())
    if match is None:
        raise ValueError(f"bad page range {spec!r}: use N, N-M or N-, with page numbers from 1")
    first = int(match.group(1))
    explicit_last = int(match.group(3)) if match.group(3) else None
    if first < 1 or explicit_last == 0:
        raise ValueError(f"bad page range {spec!r}: pages are numbered from 1")
    if explicit_last is not None and first > explicit_last:
        raise ValueError(f"bad page range {spec!r}: {first} comes after {explicit_last}")
    if match.group(2) is None:
        last = first
    else:
        last = page_count if explicit_last is None else explicit_last
    if first > page_count or last > page_count:
        raise ValueError(
            f"bad page range {spec!r}: the document has {page_count} "
            f"page{'s' if page_count != 1 else ''}"
        )
    return first, last
