"""Cutting a document into chunks that each fit one request, with exact counts.

The rule: chunks are runs of whole pages, as long as the token budget allows.
A page larger than the budget on its own becomes its own chunks, cut after
paragraph breaks (runs of "\\n\\n"), and a paragraph still too large after its
line breaks ("\\n"); a single line larger than the budget cannot be cut at a
boundary, and the document is refused (`Unsplittable`).

Counts. Every chunk's count is the counter's count of exactly the text the
worker will send (pages joined by `PAGE_SEPARATOR` as in the text file, or a
slice of one page), found by counting that text, never by adding up page
counts: BPE merges across a join (Gemma turns a page's trailing "\\n" and the
separator into one "\\n\\n\\n" token), so sums are only used as a first guess
and every chunk is recounted before it is accepted. Consequently the chunk
counts do not add up to the document's count: the separators between two
chunks belong to neither (one token each on both tokenizers), and tokens that
merged across a cut are counted on each side. The router budgets every
request on its own chunk's count and never on that sum.

Empty pages carry no text; they go with the chunk after them (trailing ones
with the last chunk), so the chunks' page ranges cover every page in order.
Each part of a split page names that page; only the first part's range may
start earlier (empty pages before it) and only the last chunk's run later.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from ingestion.capacity.route_plan import Chunk, RouteRefused
from ingestion.documents.textfile import PAGE_SEPARATOR, PageSpan
from ingestion.tokens.counting import TokenCounter, count_stream

__all__ = ["PageChunker", "Unsplittable", "chunk_pages"]

# Cut after each run of blank lines, then after each line: the pieces tile the page.
_PARAGRAPHS = re.compile(r"\n\n+")
_LINES = re.compile(r"\n+")


class Unsplittable(RouteRefused):
    """A piece of text with no paragraph or line break is larger than the budget."""

    def __init__(self, page: int, tokens: int, budget: int) -> None:
        super().__init__(
            "unsplittable",
            f"page {page} holds a line of {tokens:,} tokens with no paragraph or line "
            f"break inside, more than the {budget:,} tokens of text one request can take",
        )
        self.page = page
        self.tokens = tokens
        self.budget = budget


@dataclass(frozen=True)
class _Unit:
    """A page with text, or a piece of one: its text, place and own exact count."""

    page_index: int
    text: str
    offset: int  # characters into its page
    tokens: int
    exact: bool


def _count(counter: TokenCounter, text: str) -> tuple[int, bool]:
    # count_stream: exact by safe cuts, and it survives texts tiktoken refuses whole.
    result = count_stream(counter, [text])
    return result.count, result.exact


def _pack(
    units: Sequence[_Unit], sep: str, counter: TokenCounter, budget: int
) -> list[tuple[int, int, int, bool]]:
    """Greedy runs units[i:j] whose joined text counts <= budget: (i, j, tokens, exact).

    Every unit alone must fit. The run grows on the sum of unit counts, then the
    joined text is counted; while that exceeds the budget, units are given back
    from the end (about as many tokens as the excess) and it is counted again.
    """
    sep_tokens = counter.count(sep) if sep else 0
    runs = []
    i = 0
    while i < len(units):
        j, guess = i + 1, units[i].tokens
        while j < len(units) and guess + sep_tokens + units[j].tokens <= budget:
            guess += sep_tokens + units[j].tokens
            j += 1
        while True:
            if j == i + 1:
                tokens, exact = units[i].tokens, units[i].exact
                break
            tokens, exact = _count(counter, sep.join(u.text for u in units[i:j]))
            if tokens <= budget:
                break
            excess = tokens - budget
            while j > i + 1 and excess > 0:
                j -= 1
                excess -= units[j].tokens + sep_tokens
        runs.append((i, j, tokens, exact))
        i = j
    return runs


def _pieces(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    cuts = [m.end() for m in pattern.finditer(text) if m.end() < len(text)]
    bounds = [0, *cuts, len(text)]
    return list(itertools.pairwise(bounds))


def _split(
    unit: _Unit, counter: TokenCounter, budget: int, page: int, depth: int = 0
) -> list[_Unit]:
    """Pieces of `unit` that each fit: paragraphs first, then lines, else refuse."""
    pattern = (_PARAGRAPHS, _LINES)[depth]
    out: list[_Unit] = []
    for a, b in _pieces(unit.text, pattern):
        text = unit.text[a:b]
        tokens, exact = _count(counter, text)
        piece = _Unit(unit.page_index, text, unit.offset + a, tokens, exact)
        if tokens <= budget:
            out.append(piece)
        elif depth + 1 < 2:
            out.extend(_split(piece, counter, budget, page, depth + 1))
        else:
            raise Unsplittable(page, tokens, budget)
    return out


def chunk_pages(
    pages: Iterable[tuple[PageSpan, str]], counter: TokenCounter, budget: int
) -> list[Chunk]:
    """Chunks of at most `budget` tokens (by `counter`), in page order.

    `pages` are (span, text) in order, as `textfile.read_pages` yields them.
    Raises `Unsplittable` for a line longer than the budget.
    """
    if budget <= 0:
        raise ValueError(f"chunk budget must be positive, not {budget}")
    spans: list[PageSpan] = []
    chunks: list[Chunk] = []
    run: list[_Unit] = []

    def flush() -> None:
        for i, j, tokens, exact in _pack(run, PAGE_SEPARATOR, counter, budget):
            first, last = spans[run[i].page_index], spans[run[j - 1].page_index]
            chunks.append(
                Chunk(
                    0,
                    first.number,
                    last.number,
                    first.char_start,
                    last.char_end,
                    first.byte_start,
                    last.byte_end,
                    tokens,
                    exact,
                )
            )
        run.clear()

    for span, text in pages:
        spans.append(span)
        if not text:
            continue
        tokens, exact = _count(counter, text)
        unit = _Unit(len(spans) - 1, text, 0, tokens, exact)
        if tokens <= budget:
            run.append(unit)
            continue
        flush()
        pieces = _split(unit, counter, budget, span.number)
        parts = _pack(pieces, "", counter, budget)
        for n, (i, j, count, ok) in enumerate(parts, start=1):
            a, b = pieces[i].offset, pieces[j - 1].offset + len(pieces[j - 1].text)
            byte_a = span.byte_start + _utf8_len(text[:a])
            chunks.append(
                Chunk(
                    0,
                    span.number,
                    span.number,
                    span.char_start + a,
                    span.char_start + b,
                    byte_a,
                    byte_a + _utf8_len(text[a:b]),
                    count,
                    ok,
                    n,
                    len(parts),
                )
            )
    flush()
    return _cover(chunks, spans)


def _utf8_len(text: str) -> int:
    # surrogatepass: a lone surrogate takes 3 bytes, as the U+FFFD that write_pages
    # puts in its place does, so offsets agree with the file either way.
    return len(text.encode("utf-8", "surrogatepass"))


def _cover(chunks: list[Chunk], spans: list[PageSpan]) -> list[Chunk]:
    """Number the chunks and stretch their page ranges over the empty pages."""
    if not spans:
        return []
    if not chunks:
        s = spans[0]
        return [Chunk(0, s.number, spans[-1].number, s.char_start, s.char_start,
                      s.byte_start, s.byte_start, 0, True)]  # fmt: skip
    out: list[Chunk] = []
    index_of = {s.number: k for k, s in enumerate(spans)}
    for k, c in enumerate(chunks):
        first = c.first_page
        if c.part <= 1:
            prev = index_of[out[-1].last_page] + 1 if out else 0
            first = spans[prev].number
        last = spans[-1].number if k == len(chunks) - 1 else c.last_page
        out.append(replace(c, index=k, first_page=first, last_page=last))
    return out


class PageChunker:
    """Chunks one document for whichever role the router picks (`router.Chunker`)."""

    def __init__(
        self, pages: Sequence[tuple[PageSpan, str]], counters: Mapping[str, TokenCounter]
    ) -> None:
        self.pages = pages
        self.counters = counters

    def __call__(self, role: str, budget: int) -> list[Chunk]:
        counter = self.counters.get(role)
        if counter is None:
            raise RouteRefused(
                "no_tokenizer",
                f"splitting for {role} needs its tokenizer file, for exact chunk counts",
            )
        return chunk_pages(self.pages, counter, budget)
