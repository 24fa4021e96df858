"""The worker process's Celery app: the queue's app, told where Longdoc's tasks live.

`celery -A workers.app worker` loads this module; the API and the CLI never do. The
task modules are named in Celery's `imports` setting, which the worker imports when it
starts (`app.loader.import_default_modules`); importing this module alone imports none.
Only the worker's main process sweeps and probes; pool children just run tasks.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready

from service.config import get_settings
from service.queue import app, dispatch_ingest, dispatch_job

__all__ = ["app"]
# Written into the configuration still pending: it sets no other setting, and reads none.
app.conf.imports = ("workers.ingest.tasks", "workers.jobs.tasks")


def _start_background_threads(**_: Any) -> None:
    from service.db import get_sessionmaker
    from workers.schedule import worker_schedule

    worker_schedule(get_sessionmaker(), get_settings(), dispatch_ingest, dispatch_job).start()


# Only the worker's main process sweeps and probes; pool children just run tasks.
worker_ready.connect(_start_background_threads, weak=False)
