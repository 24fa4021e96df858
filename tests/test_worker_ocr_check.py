"""The worker says at start-up what OCR can do on its machine (`workers/app.py`
check_ocr): which Tesseract languages it has, or that it has none, so an operator
learns it before the first scan comes back without text."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ingestion.documents import ocr
from service.config import Settings
from workers.app import check_ocr


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "workers.app"]


def test_a_machine_without_language_data_is_told_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TESSDATA_PREFIX is where PyMuPDF looks first: an empty folder is no Tesseract.
    with monkeypatch.context() as env:
        env.setenv("TESSDATA_PREFIX", str(tmp_path))
        ocr.find_tessdata.cache_clear()
        try:
            with caplog.at_level(logging.INFO, logger="workers.app"):
                check_ocr(Settings())
        finally:
            env.undo()
            ocr.find_tessdata.cache_clear()
    (message,) = _messages(caplog)
    assert "Tesseract not found" in message and "tesseract-ocr" in message


def test_the_languages_found_are_logged_and_a_missing_default_warned(
    tesseract: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="workers.app"):
        check_ocr(Settings(ocr_languages="eng+fra"))
        check_ocr(Settings(ocr_languages="xyz"))
        check_ocr(Settings(ocr_mode="off", ocr_languages="xyz"))  # off: nothing to say
    found, again, warned = _messages(caplog)
    assert found == again
    assert "eng" in found and "fra" in found and str(tesseract) in found
    assert "LONGDOC_OCR_LANGUAGES" in warned and "xyz is not installed" in warned


def test_a_malformed_default_list_is_refused_with_the_settings() -> None:
    with pytest.raises(ValueError, match="ocr_languages"):
        Settings(ocr_languages="de en")
    with pytest.raises(ValueError, match="ocr_mode"):
        Settings(ocr_mode="sometimes")  # type: ignore[arg-type]


def test_the_ocr_time_budget_follows_the_ingest_time_limit() -> None:
    limits = {"ingest_soft_time_limit_s": 100, "ingest_time_limit_s": 120}
    assert Settings(**limits).ocr_max_seconds_per_document == 60  # type: ignore[arg-type]
    own = Settings(**limits, ocr_max_seconds_per_document=90)  # type: ignore[arg-type]
    assert own.ocr_max_seconds_per_document == 90
    with pytest.raises(ValueError, match="ocr_max_seconds_per_document"):
        Settings(**limits, ocr_max_seconds_per_document=100)  # type: ignore[arg-type]
