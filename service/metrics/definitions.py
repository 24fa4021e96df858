"""The counters and histograms the workers update as they work, and one recording
function per event, so call sites stay one line and the labels stay in one place.

In a Celery worker these are written to PROMETHEUS_MULTIPROC_DIR (one file per pool
child; `service.metrics.worker`), so the main process serves their sum. Every metric
here has labels: a labelled child picks its value class when `.labels()` is first
called, in a task, well after the worker set multiprocess mode up, so the order of
imports at start-up cannot leave one of them in a process-local value.

Nothing here is a gauge of state (jobs by status, KV held): those are read from the
database when the API is scraped (`service.metrics.scrape`), so they cannot drift
from the truth or double-count across workers.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds: a job admitted at once to one that waited out a long batch backlog.
_WAIT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
# Seconds: a one-page parse to a 10,000-page PDF.
_PARSE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800)
# Seconds: a short chat answer on a GPU to a long map-reduce step on a CPU server.
_INFERENCE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640, 1280, 3300)

ADMISSION_WAIT = Histogram(
    "longdoc_admission_wait_seconds",
    "Time a job or map-reduce request waited for KV room, from waiting_since to admitted.",
    ["role"],
    buckets=_WAIT_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "longdoc_prompt_tokens",
    "Prompt tokens of the requests whose result was stored, as the server counted them.",
    ["model"],
)
COMPLETION_TOKENS = Counter(
    "longdoc_completion_tokens",
    "Completion tokens of the requests whose result was stored, as the server counted them.",
    ["model"],
)
INFERENCE_SECONDS = Histogram(
    "longdoc_inference_seconds",
    "One vLLM chat call of a job, retries within the call included.",
    ["role", "model"],
    buckets=_INFERENCE_BUCKETS,
)
FIRST_TOKEN_SECONDS = Histogram(
    "longdoc_inference_first_token_seconds",
    "Time to the first token of the attempt that answered (about the prefill).",
    ["role", "model"],
    buckets=_INFERENCE_BUCKETS,
)
PARSE_PAGES = Counter(
    "longdoc_parse_pages", "Pages parsed from uploads (parses that succeeded).", ["media_type"]
)
OCR_PAGES = Counter(
    "longdoc_ocr_pages",
    "Pages of scans through OCR slices: recognised by Tesseract, or failed (an error,"
    " a time limit, a worker that kept dying).",
    ["outcome"],
)
PARSE_SECONDS = Histogram(
    "longdoc_parse_seconds",
    "One parse of an upload, text written and tokens counted, by how it ended.",
    ["media_type", "outcome"],
    buckets=_PARSE_BUCKETS,
)
WEBHOOK_DELIVERIES = Counter(
    "longdoc_webhook_deliveries",
    "Webhook delivery attempts by outcome: succeeded, retry (due again), failed, disabled.",
    ["outcome"],
)

# Every metric family the code defines, by the name a PromQL expression uses for it
# (a counter's samples end in _total, a histogram's in _bucket, _sum and _count); the
# scrape-time gauges add theirs (`service.metrics.scrape.GAUGES`).
DEFINED = (
    ADMISSION_WAIT,
    PROMPT_TOKENS,
    COMPLETION_TOKENS,
    INFERENCE_SECONDS,
    FIRST_TOKEN_SECONDS,
    PARSE_PAGES,
    PARSE_SECONDS,
    OCR_PAGES,
    WEBHOOK_DELIVERIES,
)


def record_admission_wait(role: str | None, seconds: float) -> None:
    ADMISSION_WAIT.labels(role or "none").observe(max(seconds, 0.0))


def record_tokens(model: str, prompt: int | None, completion: int | None) -> None:
    PROMPT_TOKENS.labels(model).inc(prompt or 0)
    COMPLETION_TOKENS.labels(model).inc(completion or 0)


def record_inference(role: str, model: str, seconds: float, first_token_s: float | None) -> None:
    INFERENCE_SECONDS.labels(role, model).observe(seconds)
    if first_token_s is not None:
        FIRST_TOKEN_SECONDS.labels(role, model).observe(first_token_s)


def record_parse(media_type: str, outcome: str, seconds: float, pages: int) -> None:
    PARSE_SECONDS.labels(media_type, outcome).observe(seconds)
    if pages:
        PARSE_PAGES.labels(media_type).inc(pages)


def record_ocr_pages(outcome: str, pages: int) -> None:
    if pages:
        OCR_PAGES.labels(outcome).inc(pages)


def record_webhook(outcome: str) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc()
