"""A job's page range: `"7"` or `"30-45"`, 1-based and inclusive, parsed before the
document's page count is known (a job may be created while its document is parsed).

One range, not a list: a job's text is then one run of the text file, counted,
split and cited as the whole document is, only shorter. Lists ("1-3,10-12") and
open ends ("5-": the end depends on a document not parsed yet) are refused with a
reason that says so. The spec is checked character by character before any number
is converted, so a hostile one costs its length and nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Far above any document Longdoc parses (LONGDOC_MAX_PAGES), low enough that a
# number is never long: the syntax check refuses anything past it by its digits.
MAX_PAGE_NUMBER = 1_000_000
MAX_SPEC_CHARS = 32
_DIGITS = len(str(MAX_PAGE_NUMBER))
# ASCII digits only ("\d" takes other scripts' digits too), no sign, no spaces inside.
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


class PageRangeError(ValueError):
    """The spec is not a page range; the message says why, for people."""


@dataclass(frozen=True, slots=True)
class PageRange:
    first: int
    last: int

    def __post_init__(self) -> None:
        if not 1 <= self.first <= self.last <= MAX_PAGE_NUMBER:
            raise PageRangeError(f"bad page range {self.first}-{self.last}")

    def __str__(self) -> str:
        """The canonical spec: "7" for one page, "30-45" for more."""
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"

    def __contains__(self, page: object) -> bool:
        return type(page) is int and self.first <= page <= self.last

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    def check_within(self, page_count: int) -> None:
        """PageRangeError unless every page of the range is one of the document's."""
        if self.last > page_count:
            plural = "" if page_count == 1 else "s"
            raise PageRangeError(
                f"pages {self} are past the end of the document: it has {page_count:,} page{plural}"
            )


def _number(text: str, spec: str) -> int:
    if len(text) > _DIGITS or int(text) > MAX_PAGE_NUMBER:
        raise PageRangeError(f"{spec!r}: page numbers go up to {MAX_PAGE_NUMBER:,}")
    if int(text) == 0:
        raise PageRangeError(f"{spec!r}: pages are numbered from 1")
    return int(text)


def parse_pages(spec: str) -> PageRange:
    """`"7"` -> PageRange(7, 7), `"30-45"` -> PageRange(30, 45). Surrounding spaces are
    allowed; PageRangeError says what is wrong with anything else."""
    if not isinstance(spec, str):
        raise PageRangeError(f'a page range is a string such as "30-45", not {spec!r}')
    if len(spec) > MAX_SPEC_CHARS:
        raise PageRangeError(f"a page range is at most {MAX_SPEC_CHARS} characters")
    text = spec.strip()
    if "," in text:
        raise PageRangeError(
            f"{spec!r}: one range only (N or N-M); a job cannot take a list of ranges"
        )
    match = _RANGE.fullmatch(text)
    if match is None:
        if text.endswith("-") and text[:-1].isascii() and text[:-1].isdigit():
            raise PageRangeError(f"{spec!r}: give the last page too (N-M)")
        raise PageRangeError(f"{spec!r} is not a page range: use N or N-M, pages from 1")
    first = _number(match.group(1), spec)
    last = first if match.group(2) is None else _number(match.group(2), spec)
    if first > last:
        raise PageRangeError(f"{spec!r}: page {first} comes after page {last}")
    return PageRange(first, last)
