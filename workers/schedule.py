"""The worker's chores on a clock: the sweepers (documents and jobs, OCR slices), the
backend refresher, batches and webhooks, from one `service.periodic.Scheduler` in the
worker's main process (why not Celery beat, and the error policy they share: that
module's docstring).

Every worker runs them; the sweeper's re-dispatches are guarded and the refresher
upserts, so several at once are safe. Pool children only run tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from sqlalchemy.orm import Session

from service.backends.discovery import refresh
from service.batches.lifecycle import advance_all
from service.blobstore import BlobStore
from service.config import Settings
from service.models import utcnow
from service.periodic import Job, Scheduler
from service.queue import (
    dispatch_expand,
    dispatch_ingest,
    dispatch_ocr_slice,
    dispatch_webhook,
    revoke,
)
from service.webhooks.delivery import hand_out
from workers.ocr.recovery import sweep_ocr
from workers.sweeper import sweep_all

log = logging.getLogger(__name__)


def refresh_backends(sessions: Callable[[], Session], settings: Settings) -> None:
    with sessions() as session:
        refresh(session, settings, utcnow())


def sweeper_job(
    sessions: Callable[[], Session],
    settings: Settings,
    dispatch: Callable[[str], None],
    dispatch_job: Callable[[str, int], object] | None = None,
) -> Job:
    fn = partial(sweep_all, sessions, settings, dispatch, dispatch_job)
    return Job("sweeper", settings.sweep_interval_s, fn)


def refresher_job(sessions: Callable[[], Session], settings: Settings) -> Job:
    fn = partial(refresh_backends, sessions, settings)
    return Job("backend refresh", settings.backend_refresh_interval_s, fn)


def batches_job(sessions: Callable[[], Session], settings: Settings) -> Job:
    """Batches moved on: the lines of requests that ended written to their output
    and error files, finalizing and completed once every request is final, the
    stragglers of a cancel ended, expiry past the completion window."""
    fn = partial(advance_all, sessions, revoke, dispatch_expand, BlobStore(settings.blobs))
    return Job("batch advance", settings.batch_advance_interval_s, fn)


def hand_out_webhooks(sessions: Callable[[], Session], settings: Settings) -> None:
    with sessions() as session:
        hand_out(session, settings, dispatch_webhook)


def webhooks_job(sessions: Callable[[], Session], settings: Settings) -> Job:
    """Due webhook deliveries handed to tasks: new events, retries whose backoff
    passed, and those a stopped worker held."""
    fn = partial(hand_out_webhooks, sessions, settings)
    return Job("webhooks", settings.webhook_poll_interval_s, fn)


def sweep_ocr_slices(sessions: Callable[[], Session], settings: Settings) -> None:
    with sessions() as session:
        sweep_ocr(session, settings, dispatch_ocr_slice, dispatch_ingest)


def ocr_job(sessions: Callable[[], Session], settings: Settings) -> Job:
    """Slices of scans whose worker went silent sent again; joins not sent, sent."""
    fn = partial(sweep_ocr_slices, sessions, settings)
    return Job("ocr sweep", settings.sweep_interval_s, fn)


def worker_schedule(
    sessions: Callable[[], Session],
    settings: Settings,
    dispatch: Callable[[str], None],
    dispatch_job: Callable[[str, int], object],
) -> Scheduler:
    """The worker's scheduler, not started: a sweep and a refresh at once, then each at
    its interval."""
    jobs = [
        sweeper_job(sessions, settings, dispatch, dispatch_job),
        refresher_job(sessions, settings),
        batches_job(sessions, settings),
        webhooks_job(sessions, settings),
        ocr_job(sessions, settings),
    ]
    return Scheduler(jobs, log, name="worker schedule")
