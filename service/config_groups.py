"""Groups of settings that `service.config.Settings` is made of, each with the
comments that say why its defaults are what they are. Read through `Settings`
(`get_settings()`), never on their own: the environment prefix and the checks that
tie one group to another (a time limit below another) are `Settings`'."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ingestion.documents.ocr_languages import language_problem


class OcrSettings(BaseModel):
    # OCR of scanned pages (ingestion/documents/ocr.py), unless an upload says otherwise
    # (`ocr=`, `ocr_languages=`): auto OCRs pages that show images and have no text.
    # Languages: an upload's, else the document's metadata language where Tesseract
    # has it, else ocr_languages. A page is rendered at ocr_dpi, lowered so that it
    # stays under ocr_max_pixels (Tesseract peaks at ~12 bytes a pixel: ~240 MB);
    # past ocr_max_pages_per_document OCR'd pages, or ocr_max_seconds_per_document of
    # OCR (below ingest_soft_time_limit_s, 60% of it by default: a page is seconds, and
    # a long scan must end parsed, with its other pages, not time out), the rest say
    # `ocr_skipped`.
    ocr_mode: Literal["auto", "force", "off"] = "auto"
    # Who reads the render: `tesseract`, the command (1.6-2.7x MuPDF's speed: it is
    # built with SIMD), `mupdf`, the Tesseract PyMuPDF links in, or `auto`, the command
    # where it is on PATH. The command gets ocr_page_time_limit_s a page.
    ocr_engine: Literal["auto", "mupdf", "tesseract"] = "auto"
    ocr_languages: str = "eng"
    ocr_dpi: int = Field(default=300, gt=0, le=1_200)
    ocr_max_pixels: int = Field(default=20_000_000, gt=0)
    ocr_max_pages_per_document: int = Field(default=500, ge=0)
    ocr_max_seconds_per_document: float = Field(
        default=0.0, ge=0, description="0: 60% of ingest_soft_time_limit_s"
    )
    # A scan with more than ocr_inline_max_pages pages to OCR is recognised on the `ocr`
    # queue (workers/ocr/), in slices of ocr_slice_pages pages that its workers take in
    # parallel; fewer are recognised in the ingest task itself (a message round trip
    # costs more than a page). A slice may take ocr_page_time_limit_s a page (Celery's
    # soft limit; its hard limit is 30 s more); a slice whose worker died or hit the
    # limit ocr_slice_max_attempts times leaves its pages `ocr_failed`. A tenant is
    # granted at most ocr_max_pages_per_tenant_day OCR pages a day (UTC; 0: no cap);
    # past it, pages say `ocr_skipped: daily OCR cap ...`.
    ocr_inline_max_pages: int = Field(default=2, ge=0)
    ocr_slice_pages: int = Field(default=4, gt=0, le=100)
    ocr_page_time_limit_s: int = Field(default=120, gt=0)
    ocr_slice_max_attempts: int = Field(default=3, gt=0)
    ocr_max_pages_per_tenant_day: int = Field(default=0, ge=0)

    @property
    def ocr_slice_soft_time_limit_s(self) -> int:
        return self.ocr_page_time_limit_s * self.ocr_slice_pages

    @property
    def ocr_slice_time_limit_s(self) -> int:
        return self.ocr_slice_soft_time_limit_s + 30

    @field_validator("ocr_languages")
    @classmethod
    def _ocr_languages_form(cls, value: str) -> str:
        # The form only: which packs are installed is the worker's machine's affair
        # (a page names a missing one in its warnings).
        problem = language_problem(value, None)
        if problem is not None:
            raise ValueError(problem)
        return value


class ApiLoadSettings(BaseModel):
    # API load. Sync handlers run on api_threads threads; at most max_concurrent_requests
    # requests run at once (default: one per thread), more wait up to
    # request_queue_timeout_s, and past max_queued_requests waiting a request is refused
    # at once: both with a 503 and Retry-After. A request holds at most one database
    # connection, so the pool (default) has one per running request plus the three a
    # worker process may use at once (sweeper, backend refresher; a task and its
    # heartbeat); waiting db_pool_timeout_s for one is a 503 too, never a 30 s wait.
    api_threads: int = Field(default=40, gt=0)
    max_concurrent_requests: int = Field(default=0, ge=0, description="0: api_threads")
    max_queued_requests: int = Field(default=1_000, ge=0)
    request_queue_timeout_s: float = Field(default=30.0, gt=0)
    overload_retry_after_s: int = Field(default=2, gt=0)
    db_pool_size: int = Field(default=0, ge=0, description="0: max_concurrent_requests + 3")
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout_s: float = Field(default=5.0, gt=0)


class WebhookSettings(BaseModel):
    # Webhook callbacks (service/webhooks/destinations.py) to private, loopback or
    # link-local addresses: a client's URL is fetched from inside our network, so a
    # deployment refuses them (SSRF). Unset, the stack decides: the embedded one
    # (SQLite, one machine) allows them, since its receivers run on localhost; a
    # Postgres deployment refuses them. The tests' receivers are on 127.0.0.1, so
    # tests that deliver set it true.
    webhook_allow_private: bool | None = None
    # Deliveries (service/webhooks/outbox.py): each attempt waits at most
    # webhook_timeout_s; a 429, a 5xx or no answer is tried again after
    # webhook_backoff_s doubling (capped at webhook_max_backoff_s, or later when the
    # receiver's Retry-After says so), webhook_max_attempts times in all. The worker
    # looks for due deliveries every webhook_poll_interval_s.
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    webhook_max_attempts: int = Field(default=8, gt=0)
    webhook_backoff_s: float = Field(default=5.0, gt=0)
    webhook_max_backoff_s: float = Field(default=3600.0, gt=0)
    webhook_poll_interval_s: float = Field(default=2.0, gt=0)
