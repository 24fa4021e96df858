"""The queue producer: the Celery app's broker settings, and sending and revoking tasks.

Redis in production; a SQLite-backed kombu transport when embedded. The API, the
sweeper and the workers send through here; the task modules are named by `workers.app`
(Celery's `imports` setting), which only the worker process loads. Durability does not
rest on the broker alone: the database records who is parsing what and when they last
said so, and `workers.sweeper` re-dispatches work whose worker went silent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from ingestion.capacity.priority import PRIORITY_STEPS
from service import logs
from service.config import Settings, get_settings

log = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
INGEST_TASK = "longdoc.ingest"
JOBS_QUEUE = "jobs"
JOB_TASK = "longdoc.run_job"
EXPAND_TASK = "longdoc.expand_batch"
WEBHOOK_TASK = "longdoc.deliver_webhook"
# A scan's pages, recognised a slice at a time: seconds of CPU a page, so on a queue
# (and workers, with their own concurrency) of its own, not behind or before parses.
OCR_QUEUE = "ocr"
OCR_TASK = "longdoc.ocr_slice"
QUEUES = (INGEST_QUEUE, JOBS_QUEUE, OCR_QUEUE)


def _transport_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # One list per priority step, popped best first (`ingestion.capacity.priority`).
        return {
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "priority_steps": list(PRIORITY_STEPS),
        }
    if settings.broker_url.startswith(("sqla+", "sqlalchemy+")):
        # These options go to create_engine; SQLite must wait for the writer lock.
        return {"connect_args": {"timeout": 30}}
    return {}


def _poll_sqlite_broker_often() -> None:
    # The SQLite transport polls its table, by default once a second, which put up to a
    # second between a job's upload, its parse and its run (bench/e2e.py). Its
    # transport options all go to create_engine, so the interval is set on the class.
    from kombu.transport import sqlalchemy as kombu_sqla

    kombu_sqla.Transport.polling_interval = 0.1


def _prefetch(settings: Settings) -> int:
    """Messages a worker takes ahead, per slot. One on Redis: a task taken ahead keeps its
    place though a better one (a higher priority) arrives after it. The SQLite
    transport has no priorities, and with one a slot sat idle between tasks for its
    ack and the next poll of the table (a batch's documents went at ~10 a second)."""
    return 1 if settings.broker_url.startswith(("redis://", "rediss://")) else 4


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration `settings` make: the broker, and the tasks' limits."""
    if settings.broker_url.startswith(("sqla+", "sqlalchemy+")):
        _poll_sqlite_broker_often()
    # The task decorators (workers/) name no time limits: Celery sets these on each task
    # class when the app is finalized (a worker at start), from this configuration, so
    # importing a task module reads no settings. Celery's hard limit stays below the
    # broker's visibility timeout (checked in Settings).
    limits = {
        INGEST_TASK: {
            "soft_time_limit": settings.ingest_soft_time_limit_s,
            "time_limit": settings.ingest_time_limit_s,
        },
        JOB_TASK: {
            "soft_time_limit": settings.job_soft_time_limit_s,
            "time_limit": settings.job_time_limit_s,
        },
        # An expansion stopped by its limit is sent again by the batch advancer and
        # goes on from the entries it already made.
        EXPAND_TASK: {
            "soft_time_limit": settings.ingest_soft_time_limit_s,
            "time_limit": settings.ingest_time_limit_s,
        },
        OCR_TASK: {
            "soft_time_limit": settings.ocr_slice_soft_time_limit_s,
            "time_limit": settings.ocr_slice_time_limit_s,
        },
        # One attempt: httpx's timeout is per read, so a receiver dribbling its headers
        # is stopped here. The delivery's hold (service/webhooks/delivery.py) is longer.
        WEBHOOK_TASK: {
            "soft_time_limit": settings.webhook_timeout_s * 2,
            "time_limit": settings.webhook_timeout_s * 2 + 10,
        },
    }
    return dict(
        broker_url=settings.broker_url,
        task_annotations=limits,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=_prefetch(settings),
        task_routes={
            INGEST_TASK: {"queue": INGEST_QUEUE},
            EXPAND_TASK: {"queue": INGEST_QUEUE},
            JOB_TASK: {"queue": JOBS_QUEUE},
            WEBHOOK_TASK: {"queue": JOBS_QUEUE},
            OCR_TASK: {"queue": OCR_QUEUE},
        },
        task_default_queue=INGEST_QUEUE,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        # A pool child loads the tokenizer files before its first task (workers/app.py),
        # seconds on a busy machine; Celery's 4 s default would kill it as hung.
        worker_proc_alive_timeout=120.0,
    )


def make_celery(settings: Settings) -> Celery:
    app = Celery("longdoc")
    app.conf.update(celery_config(settings))
    return app


# The process's own app (the API's, a worker's, the sweeper's). Configured from the
# process's settings when first used, not when this module is imported: importing it
# (`longdoc worker` does, for QUEUES) reads no settings.
app = Celery("longdoc")
app.add_defaults(lambda: celery_config(get_settings()))


# The message header that carries the id of the API request a task comes from, so the
# worker's lines about it carry that id too (workers/app.py binds it), and so do the
# tasks it sends in turn (an ingest waking its job).
REQUEST_ID_HEADER = "longdoc_request_id"


def _send(name: str, args: list[Any], queue: str, priority: int | None = None) -> Any:
    request_id = logs.current_ids().get("request_id")
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return app.send_task(name, args=args, queue=queue, priority=priority, headers=headers)


def dispatch_ingest(document_id: str) -> None:
    _send(INGEST_TASK, [document_id], INGEST_QUEUE)


def dispatch_ocr_slice(document_id: str, slice_no: int) -> None:
    _send(OCR_TASK, [document_id, slice_no], OCR_QUEUE)


def dispatch_expand(batch_id: str) -> None:
    _send(EXPAND_TASK, [batch_id], INGEST_QUEUE)


def dispatch_webhook(delivery_id: str, held: str) -> None:
    # Above every job's priority (lower goes first): an attempt is short, and a
    # receiver waiting behind long-context jobs would see its events late.
    _send(WEBHOOK_TASK, [delivery_id, held], JOBS_QUEUE, priority=0)


def dispatch_job(job_id: str, priority: int) -> str:
    """Send a job's task at `priority` (lower goes first; `service.jobs.dispatch`
    computes it); returns its Celery task id. The SQLite transport ignores it."""
    return str(_send(JOB_TASK, [job_id], JOBS_QUEUE, priority=priority).id)


def revoke(task_ids: Sequence[str]) -> None:
    """Best effort: tell workers to drop these tasks. Tasks check their job's status
    anyway, so a revoke that does not arrive (the embedded transport has no broadcast)
    only costs a no-op run."""
    if not task_ids or not app.conf.broker_url.startswith(("redis://", "rediss://")):
        return
    try:
        app.control.revoke(list(task_ids))
    except Exception:
        log.warning("could not revoke tasks %s", task_ids, exc_info=True)
