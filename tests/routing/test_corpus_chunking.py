"""Chunking real corpus documents with the real tokenizers: exact counts, the text
file's bytes, page coverage, and how chunk counts relate to the whole."""

from __future__ import annotations

import itertools

import pytest

from ingestion.capacity.chunking import Unsplittable, chunk_pages
from tests.routing.conftest import check_cover, counter_for, parse

CASES = [
    # 1,370 pages, whole-page chunks only.
    ("pdf/latex-lwarp.pdf", "scout", 20_000),
    # A budget below most pages: nearly every page is cut at paragraph/line breaks.
    ("pdf/r-intro.pdf", "scout", 200),
    ("pdf/r-intro.pdf", "gemma", 200),
    # Multi-byte text, so character and byte offsets differ.
    ("pdf/debian-reference.ja.pdf", "gemma", 2_000),
]


@pytest.mark.parametrize(("rel", "role", "budget"), CASES)
def test_real_documents_chunk_exactly(rel: str, role: str, budget: int) -> None:
    counter = counter_for(role)
    data, pages = parse(rel)
    full = data.decode("utf-8")
    chunks = chunk_pages(pages, counter, budget)
    check_cover(chunks, full, pages)
    for c in chunks:
        text = data[c.byte_start : c.byte_end].decode("utf-8")
        assert text == full[c.char_start : c.char_end]
        assert c.exact and c.tokens == counter.count(text) and 0 < c.tokens <= budget
    # The chunk counts do not add up to the document's: a cut between pages drops the
    # separator (one token), and a cut can split what the whole text merges into one
    # token (a page's last "\n" and the separator), at most one per cut here.
    cuts = len(chunks) - 1
    dropped = sum(full[a.char_end : b.char_start] == "\n\n" for a, b in itertools.pairwise(chunks))
    merged = sum(c.tokens for c in chunks) + dropped * counter.count("\n\n") - counter.count(full)
    assert 0 <= merged <= cuts


def test_a_1000_page_pdf_in_small_chunks_keeps_its_page_order() -> None:
    counter = counter_for("scout")
    _, pages = parse("pdf/latex-lwarp.pdf")
    chunks = chunk_pages(pages, counter, 20_000)
    assert len(pages) == 1_370
    assert 40 <= len(chunks) <= 60  # ~871K tokens in chunks of at most 20K
    assert all(c.parts == 0 for c in chunks)
    assert [c.first_page for c in chunks] == sorted({c.first_page for c in chunks})


def test_a_line_longer_than_the_budget_is_refused_with_its_page() -> None:
    counter = counter_for("scout")
    _, pages = parse("pdf/r-intro.pdf")
    with pytest.raises(Unsplittable) as err:
        chunk_pages(pages, counter, 5)
    assert err.value.code == "unsplittable"
    assert err.value.tokens > 5
    assert f"page {err.value.page} holds a line of" in err.value.reason
