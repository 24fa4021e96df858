"""The worker process's Celery app: the queue's app with Longdoc's tasks registered.

`celery -A workers.app worker` loads this module; the API and the CLI never do.
Only the worker's main process sweeps and probes; pool children just run tasks.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from service.config import get_settings
from service.queue import app, dispatch_ingest, dispatch_job
from workers.batches import tasks as _batch_tasks
from workers.ingest import tasks as _ingest_tasks
from workers.jobs import tasks as _job_tasks

__all__ = ["app"]
_TASK_MODULES = (_ingest_tasks, _job_tasks, _batch_tasks)


def _start_background_threads(**_: Any) -> None:
    from service.db import get_sessionmaker
    from workers.schedule import worker_schedule

    worker_schedule(get_sessionmaker(), get_settings(), dispatch_ingest, dispatch_job).start()


# Only the worker's main process sweeps and probes; pool children just run tasks.
worker_ready.connect(_start_background_threads, weak=False)
