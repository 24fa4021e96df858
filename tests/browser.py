"""A real headless browser for the tests of pages: Debian's chromium, driven by
Playwright (its own browser download is never used), and where the screenshots go.

Screenshots are kept under `test-artifacts/` (or $LONGDOC_TEST_ARTIFACTS), outside
any temporary directory, so a run leaves them to be looked at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.prereq import require

CHROMIUM = "/usr/bin/chromium"


def artifacts() -> Path:
    root = Path(
        os.environ.get("LONGDOC_TEST_ARTIFACTS", Path(__file__).parents[1] / "test-artifacts")
    )
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless chromium per module; each test opens its own context (cookies)."""
    require(
        Path(CHROMIUM).is_file() or shutil.which("chromium"),
        "Debian's chromium is not installed: `make browser` (apt-get install chromium)",
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield browser
        finally:
            browser.close()
