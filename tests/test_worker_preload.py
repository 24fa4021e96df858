"""A pool child loads its tokenizer files before its first task (`workers/app.py`): a
load inside the first parse held the GIL for seconds and starved that parse's
heartbeat, so a busy machine's sweeper took live parses away."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ingestion.tokens import counting
from service.config import Settings
from tests.conftest import CACHE
from tests.prereq import require
from workers.app import preload_tokenizers


def test_configured_tokenizers_are_loaded_and_a_broken_one_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scout = CACHE / "tokenizers" / "scout" / "tokenizer.model"
    require(scout.is_file(), f"{scout} missing: run make tokenizers")
    broken = tmp_path / "tokenizer.json"
    broken.write_text("{not json")
    counting._CACHE.pop(scout.resolve(), None)
    with caplog.at_level(logging.WARNING, logger="workers.app"):
        preload_tokenizers(Settings(tokenizers={"scout": scout, "gemma": broken}))
    assert scout.resolve() in counting._CACHE
    assert broken.resolve() not in counting._CACHE
    assert any("tokenizer for gemma not preloaded" in r.getMessage() for r in caplog.records)
