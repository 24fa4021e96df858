"""Fixtures for the ingestion tests: the real-document corpus.

The corpus is built by scripts/fetch-corpus.sh (`make corpus`); its location
comes from LONGDOC_CORPUS_DIR (default ~/.cache/longdoc/corpus). Tests that need it
are skipped, with the reason, when it is missing (under CI=true they fail: tests/prereq.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CORPUS as CORPUS_DIR
from tests.prereq import require


@pytest.fixture(scope="session")
def corpus() -> Path:
    require(
        (CORPUS_DIR / "manifest.tsv").is_file(),
        f"real-document corpus not found at {CORPUS_DIR}: build it with make corpus "
        "or set LONGDOC_CORPUS_DIR",
    )
    return CORPUS_DIR


@pytest.fixture(scope="session")
def corpus_file(corpus: Path) -> Callable[[str], Path]:
    """`corpus_file("pdf/r-intro.pdf")`: the path, or a skip if that file is absent."""

    def get(relative: str) -> Path:
        path = corpus / relative
        require(path.is_file(), f"corpus file {relative} missing: run make corpus")
        return path

    return get
