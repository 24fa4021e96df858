"""The OCR a worker (or `longdoc route`) applies, from the settings and what an upload
asked for: one place, so that inline pages, slices and a dry run read alike."""

from __future__ import annotations

from dataclasses import replace

from ingestion.documents import ocr
from ingestion.documents.ocr import OCR_MODES, OcrOptions
from service.config import Settings


def render_options(settings: Settings) -> OcrOptions:
    """What every page recognised here shares, inline or in a slice
    (workers/ocr/tasks.py): the render, and the engine with its time a page."""
    return OcrOptions(
        dpi=settings.ocr_dpi,
        max_pixels=settings.ocr_max_pixels,
        engine=ocr.resolve_engine(settings.ocr_engine),
        timeout_s=settings.ocr_page_time_limit_s,
    )


def ocr_options(settings: Settings, mode: str | None, languages: str | None) -> OcrOptions:
    """The settings' OCR, with an upload's `mode` and `languages` over them (None, or a
    mode that is not one: the settings')."""
    chosen = next((m for m in OCR_MODES if m == mode), settings.ocr_mode)
    return replace(
        render_options(settings),
        mode=chosen,
        languages=languages,
        default_languages=settings.ocr_languages,
        max_pages=settings.ocr_max_pages_per_document,
        max_seconds=settings.ocr_max_seconds_per_document,
    )
