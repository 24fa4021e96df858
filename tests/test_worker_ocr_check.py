"""The worker says at start-up what OCR can do on its machine (`workers/app.py`
check_ocr): which Tesseract languages it has, or that it has none, and which engine
reads the pages, so an operator learns it before the first scan comes back without
text; the OCR settings are checked; the engine a worker's pages get."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from ingestion.documents import ocr
from ingestion.documents.ocr_tesseract import find_tesseract
from service.config import Settings
from service.models import Document
from service.ocr_options import ocr_options, render_options
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


def test_the_engine_setting_is_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LONGDOC_OCR_ENGINE", raising=False)
    assert Settings().ocr_engine == "auto"
    for value in ("mupdf", "tesseract"):
        monkeypatch.setenv("LONGDOC_OCR_ENGINE", value)
        assert Settings().ocr_engine == value
    monkeypatch.setenv("LONGDOC_OCR_ENGINE", "fast")
    with pytest.raises(ValueError, match="ocr_engine"):
        Settings()


def test_inline_pages_and_slices_get_one_engine_resolved_from_path(
    tesseract: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(ocr_dpi=150, ocr_page_time_limit_s=7)
    doc = Document(ocr_mode="force", ocr_languages="fra")
    find_tesseract.cache_clear()
    try:
        sliced = render_options(settings)  # what workers/ocr/tasks.py recognises with
        assert (sliced.engine, sliced.timeout_s, sliced.dpi) == ("tesseract", 7, 150)
        inline = ocr_options(settings, doc.ocr_mode, doc.ocr_languages)  # the ingest task's
        assert (inline.mode, inline.languages) == ("force", "fra")
        assert replace(inline, mode="auto", languages=None, max_seconds=None) == replace(
            sliced,
            default_languages=settings.ocr_languages,
            max_pages=settings.ocr_max_pages_per_document,
        )
        with monkeypatch.context() as env:
            env.setenv("PATH", str(tmp_path))
            find_tesseract.cache_clear()
            assert render_options(settings).engine == "mupdf"
            assert render_options(Settings(ocr_engine="tesseract")).engine == "tesseract"
            with caplog.at_level(logging.INFO, logger="workers.app"):
                check_ocr(Settings())
                check_ocr(Settings(ocr_engine="tesseract"))
    finally:
        find_tesseract.cache_clear()
    auto, forced, missing = _messages(caplog)
    assert auto.endswith("engine mupdf") and forced.endswith("engine tesseract")
    assert "LONGDOC_OCR_ENGINE=tesseract" in missing and "not on PATH" in missing
