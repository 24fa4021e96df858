"""Fixtures for the token-counting tests: the real tokenizer files and real texts.

Tokenizers come from scripts/build-tokenizers.sh (paths overridable with
LONGDOC_TOKENIZER_GEMMA / LONGDOC_TOKENIZER_SCOUT); documents from the corpus
(LONGDOC_CORPUS_DIR). Tests that need a missing file skip and say which (fail under CI).
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestion.tokens.counting import TokenCounter, load_counter
from tests.conftest import CACHE as _CACHE
from tests.prereq import require

GEMMA_PATH = Path(
    os.environ.get("LONGDOC_TOKENIZER_GEMMA", _CACHE / "tokenizers" / "gemma" / "tokenizer.json")
)
SCOUT_PATH = Path(
    os.environ.get("LONGDOC_TOKENIZER_SCOUT", _CACHE / "tokenizers" / "scout" / "tokenizer.model")
)
CORPUS = Path(os.environ.get("LONGDOC_CORPUS_DIR", _CACHE / "corpus"))


def _counter(path: Path, env: str) -> TokenCounter:
    require(path.is_file(), f"tokenizer {path} missing: run make tokenizers (or set {env})")
    return load_counter(path)


@pytest.fixture(scope="session")
def gemma() -> TokenCounter:
    return _counter(GEMMA_PATH, "LONGDOC_TOKENIZER_GEMMA")


@pytest.fixture(scope="session")
def scout() -> TokenCounter:
    return _counter(SCOUT_PATH, "LONGDOC_TOKENIZER_SCOUT")


@pytest.fixture(scope="session", params=["gemma", "scout"])
def counter(request: pytest.FixtureRequest) -> TokenCounter:
    value: TokenCounter = request.getfixturevalue(request.param)
    return value


def _corpus(rel: str) -> Path:
    path = CORPUS / rel
    require(
        path.is_file(), f"corpus file {path} missing: run make corpus (or set LONGDOC_CORPUS_DIR)"
    )
    return path


def _html_text(rel: str) -> str:
    # Crude on purpose: the point is real multilingual text, not faithful HTML.
    raw = _corpus(rel).read_text(encoding="utf-8", errors="replace")
    raw = re.sub(r"(?is)<(script|style)\b.*?</\1>", "", raw)
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def _pdf_text(rel: str, pages: int) -> str:
    import pymupdf

    with pymupdf.open(_corpus(rel)) as doc:  # type: ignore[no-untyped-call]
        return "\n".join(doc[i].get_text() for i in range(min(pages, doc.page_count)))


# The huge texts are cut to their first million characters: hundreds of stream cuts
# each, and what a cut must keep does not depend on how much text follows.
REAL_TEXTS: dict[str, Callable[[], str]] = {
    "kjv-bible-1M": lambda: _corpus("huge/kjv-bible.txt").read_text(encoding="utf-8")[:1_000_000],
    "python-docs-1M": lambda: _corpus("huge/python-3.11-docs.concat.txt").read_text(
        encoding="utf-8"
    )[:1_000_000],
    "debian-policy.txt": lambda: _corpus("text/debian-policy.txt").read_text(encoding="utf-8"),
    "python-stdtypes.html": lambda: _html_text("html/python-library-stdtypes.html"),
    "handbook.zh.html": lambda: _html_text("html/debian-handbook.network-services.zh.html"),
    "handbook.ru.html": lambda: _html_text("html/debian-handbook.advanced-administration.ru.html"),
    "handbook.ar.html": lambda: _html_text("html/debian-handbook.advanced-administration.ar.html"),
    "debian-reference.ja.pdf": lambda: _pdf_text("pdf/debian-reference.ja.pdf", 40),
    "metapost-manual.ru.pdf": lambda: _pdf_text("pdf/metapost-manual.ru.pdf", 40),
    "lshort-korean.pdf": lambda: _pdf_text("pdf/lshort-korean.pdf", 40),
}


@pytest.fixture(scope="session")
def real_text_cache() -> dict[str, str]:
    return {}


@pytest.fixture(params=sorted(REAL_TEXTS))
def real_text(request: pytest.FixtureRequest, real_text_cache: dict[str, str]) -> tuple[str, str]:
    name: str = request.param
    if name not in real_text_cache:
        real_text_cache[name] = REAL_TEXTS[name]()
    return name, real_text_cache[name]


class Recording:
    """A TokenCounter that records every chunk count_stream hands to count()."""

    def __init__(self, inner: TokenCounter) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.chunks: list[int] = []
        self.scans = 0

    def count(self, text: str) -> int:
        self.chunks.append(len(text))
        return self.inner.count(text)

    def safe_cut(self, text: str, limit: int) -> int:
        self.scans += 1
        return self.inner.safe_cut(text, limit)
