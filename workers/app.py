"""The worker process's Celery app: the queue's app, told where Longdoc's tasks live.

`celery -A workers.app worker` loads this module; the API and the CLI never do. The
task modules are named in Celery's `imports` setting, which the worker imports when it
starts (`app.loader.import_default_modules`); importing this module alone imports none.
Only the worker's main process sweeps and probes; pool children just run tasks. Its
log lines go through service/logs.py, each task's with the ids of what it runs on.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping
from typing import Any

from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from service import logs
from service.config import Settings, get_settings
from service.metrics import worker as metrics
from service.queue import (
    EXPAND_TASK,
    INGEST_TASK,
    JOB_TASK,
    OCR_TASK,
    REQUEST_ID_HEADER,
    WEBHOOK_TASK,
    app,
    dispatch_ingest,
    dispatch_job,
)

__all__ = ["app"]
log = logging.getLogger(__name__)
# Written into the configuration still pending: it sets no other setting, and reads none.
app.conf.imports = (
    "workers.ingest.tasks",
    "workers.ocr.tasks",
    "workers.jobs.tasks",
    "workers.batches.tasks",
    "workers.webhooks.tasks",
)


def _start_background_threads(**_: Any) -> None:
    from service.db import get_sessionmaker
    from workers.schedule import worker_schedule

    worker_schedule(get_sessionmaker(), get_settings(), dispatch_ingest, dispatch_job).start()


def _preload_tokenizers(**_: Any) -> None:
    preload_tokenizers(get_settings())


def preload_tokenizers(settings: Settings) -> None:
    """Load the tokenizer files before any pool child takes a task. Gemma's takes
    seconds and holds the GIL throughout: loaded inside the first parse, it starved
    that parse's heartbeat thread, and on a busy machine the claim went stale and the
    sweeper handed the parse to another child, which did the same.

    Run in the main process before the pool forks (`worker_init`), so the children
    inherit the loaded files instead of each spending those seconds again (a child
    replaced mid-batch did, while its slot stood idle), and share their memory; again
    in each child (`worker_process_init`), a no-op there unless the first load failed."""
    from ingestion.tokens.counting import load_counter

    for role, path in settings.tokenizers.items():
        try:
            load_counter(path)
        except ValueError as err:  # the parse says so again, with the document
            log.warning("tokenizer for %s not preloaded: %s", role, err)


def _check_ocr(**_: Any) -> None:
    check_ocr(get_settings())


def check_ocr(settings: Settings) -> None:
    """Say at start-up what OCR can do here. Run before the pool forks, so the children
    inherit the language folder found (a `tesseract` run) instead of each looking."""
    from ingestion.documents import ocr
    from ingestion.documents.ocr_languages import language_problem
    from ingestion.documents.ocr_tesseract import find_tesseract

    if settings.ocr_mode == "off":
        return
    installed = ocr.installed_languages()
    if not installed:
        log.warning(
            "OCR: Tesseract not found (no language data; install tesseract-ocr and "
            "tesseract-ocr-<lang>, or set TESSDATA_PREFIX): scanned pages keep no text "
            "and say ocr_skipped"
        )
        return
    engine = ocr.resolve_engine(settings.ocr_engine)  # and `tesseract` looked up, once
    log.info(
        "OCR: Tesseract languages %s in %s, engine %s",
        "+".join(sorted(installed)), ocr.find_tessdata(), engine,
    )  # fmt: skip
    if engine == "tesseract" and find_tesseract() is None:
        log.warning(
            "OCR: LONGDOC_OCR_ENGINE=tesseract, but the tesseract command is not on PATH: "
            "scanned pages say ocr_skipped"
        )
    problem = language_problem(settings.ocr_languages, installed)
    if problem is not None:
        log.warning("OCR: LONGDOC_OCR_LANGUAGES: %s", problem)


def _serve_metrics(**_: Any) -> None:
    metrics.serve(get_settings().worker_metrics_port)


# Before the pool forks and before a task module loads: every child counts into the
# multiprocess directory, and the main process serves their sum (service/metrics/worker.py).
metrics.prepare_multiprocess(get_settings().worker_metrics_port)
# Only the worker's main process sweeps, probes and serves metrics; pool children run tasks.
worker_ready.connect(_start_background_threads, weak=False)
worker_ready.connect(_serve_metrics, weak=False)
worker_process_shutdown.connect(metrics.child_exited, weak=False)
worker_init.connect(_preload_tokenizers, weak=False)
worker_init.connect(_check_ocr, weak=False)
worker_process_init.connect(_preload_tokenizers, weak=False)


def _setup_logging(loglevel: int | None = None, **_: Any) -> None:
    # A receiver here means Celery configures no logging of its own (nor redirects
    # stdout): the main process sets it up once, before the pool forks, and the
    # children inherit the handler.
    logs.setup_logging(get_settings(), sys.stderr, loglevel or logging.INFO)


# What each task's first argument is, the id its lines carry while it runs.
_TASK_ID_FIELDS = {
    INGEST_TASK: "document_id",
    OCR_TASK: "document_id",
    JOB_TASK: "job_id",
    EXPAND_TASK: "batch_id",
    WEBHOOK_TASK: "delivery_id",
}
_bound: dict[str, contextvars.Token[Mapping[str, str]]] = {}


def _bind_task_ids(
    task_id: str, task: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
    **_: Any,
) -> None:  # fmt: skip
    ids: dict[str, object] = {"task_id": task_id}
    # A header Celery's protocol 2 keeps on the request as sent (None when absent).
    request_id = getattr(task.request, REQUEST_ID_HEADER, None)
    if isinstance(request_id, str) and request_id:
        ids["request_id"] = request_id
    field = _TASK_ID_FIELDS.get(task.name)
    if field is not None:
        ids[field] = args[0] if args else (kwargs or {}).get(field)
    _bound[task_id] = logs.bind(**ids)


def _unbind_task_ids(task_id: str, **_: Any) -> None:
    # Undoes whatever the task bound since (a job's document): the next starts clean.
    token = _bound.pop(task_id, None)
    if token is not None:
        logs.unbind(token)


setup_logging.connect(_setup_logging, weak=False)
task_prerun.connect(_bind_task_ids, weak=False)
task_postrun.connect(_unbind_task_ids, weak=False)
