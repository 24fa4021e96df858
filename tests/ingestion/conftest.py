"""Fixtures for the ingestion tests: the real-document corpus.

The corpus is built by /work/shared/corpus/fetch-corpus.sh; its location comes
from LONGDOC_CORPUS_DIR (default: the cache directory's corpus/). Tests that need
it are skipped, with the reason, when it is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CORPUS as CORPUS_DIR


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS_DIR / "manifest.tsv").is_file():
        pytest.skip(
            f"real-document corpus not found at {CORPUS_DIR}: build it with "
            "/work/shared/corpus/fetch-corpus.sh or set LONGDOC_CORPUS_DIR"
        )
    return CORPUS_DIR


@pytest.fixture(scope="session")
def corpus_file(corpus: Path) -> Callable[[str], Path]:
    """`corpus_file("pdf/r-intro.pdf")`: the path, or a skip if that file is absent."""

    def get(relative: str) -> Path:
        path = corpus / relative
        if not path.is_file():
            pytest.skip(f"corpus file {relative} missing (corpus built with --no-derived?)")
        return path

    return get
