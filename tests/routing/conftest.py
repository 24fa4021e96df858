"""Fixtures for the routing tests: the real tokenizers, the real corpus, the paper
deployment. A test that needs a missing file skips and says which (fails under CI)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from ingestion.capacity.route_plan import Chunk
from ingestion.capacity.router import Backend
from ingestion.documents.formats import detect_media_type_path
from ingestion.documents.parse import open_document
from ingestion.documents.textfile import PageSpan, write_pages
from ingestion.tokens.counting import TokenCounter, load_counter
from tests.conftest import CACHE as _CACHE
from tests.conftest import CORPUS
from tests.prereq import require

TOKENIZERS = {
    "gemma": _CACHE / "tokenizers" / "gemma" / "tokenizer.json",
    "scout": _CACHE / "tokenizers" / "scout" / "tokenizer.model",
}

Pages = list[tuple[PageSpan, str]]


def counter_for(role: str) -> TokenCounter:
    path = TOKENIZERS[role]
    require(path.is_file(), f"tokenizer {path} missing: run make tokenizers")
    return load_counter(path)


@pytest.fixture(scope="session")
def scout() -> TokenCounter:
    return counter_for("scout")


@pytest.fixture(scope="session")
def gemma() -> TokenCounter:
    return counter_for("gemma")


def corpus_path(rel: str) -> Path:
    path = CORPUS / rel
    require(path.is_file(), f"corpus file {path} missing: run make corpus")
    return path


_PARSED: dict[str, tuple[bytes, Pages]] = {}


def parse(rel: str) -> tuple[bytes, Pages]:
    """The text file `write_pages` makes of a corpus document, and its (span, text) pages."""
    if rel not in _PARSED:
        path = corpus_path(rel)
        buf = io.BytesIO()
        with open_document(path, detect_media_type_path(path), max_pages=5000) as doc:
            spans = write_pages(doc.pages(), buf)
        data = buf.getvalue()
        text = data.decode("utf-8")
        _PARSED[rel] = (data, [(s, text[s.char_start : s.char_end]) for s in spans])
    return _PARSED[rel]


@pytest.fixture(scope="session")
def parsed() -> Callable[[str], tuple[bytes, Pages]]:
    return parse


@pytest.fixture
def paper() -> list[Backend]:
    """The paper deployment as `longdoc route` sees it."""
    from service.config import Settings
    from service.jobs.planner import deployment_backends

    return deployment_backends(Settings().deployment)


def check_cover(chunks: Sequence[Chunk], full: str, pages: Sequence[tuple[PageSpan, str]]) -> None:
    """The chunks cover every page once, in order, and every character of text
    except the page separators between two chunks."""
    numbers = [s.number for s, _ in pages]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].first_page == numbers[0] and chunks[-1].last_page == numbers[-1]
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(full)
    for prev, nxt in itertools.pairwise(chunks):
        gap = full[prev.char_end : nxt.char_start]
        if nxt.part > 1:  # the next piece of the same page
            assert nxt.first_page == prev.last_page
            # Only the last chunk's range runs on, over trailing empty pages.
            assert nxt.last_page == nxt.first_page or nxt is chunks[-1]
            assert (prev.part, prev.parts) == (nxt.part - 1, nxt.parts)
            assert gap == ""
        else:
            assert prev.part == prev.parts  # a split page is finished first
            assert nxt.first_page == prev.last_page + 1
            assert gap in ("", "\n\n")  # "" only when no text lies between them
        assert nxt.first_page <= nxt.last_page
