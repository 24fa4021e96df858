"""The options every Longdoc Celery task is declared with."""

from __future__ import annotations

import os
import socket
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from ingestion.types import let_through

# A task's soft time limit ends the task, not just the page it lands in (ingestion.types).
let_through(SoftTimeLimitExceeded)


def durable_task(name: str) -> dict[str, Any]:
    """Options of every Longdoc task: acknowledged after it ran, handed back if its
    worker process dies, retried while the database is away. Its time limits come from
    the app's configuration (`service.queue.celery_config`), set when a worker starts."""
    from sqlalchemy.exc import OperationalError

    return {
        "name": name,
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "autoretry_for": (OperationalError,),
        "retry_backoff": True,
        "max_retries": 5,
    }


def worker_name(task: Any) -> str:
    """host:pid of the process running `task`: what claims record as their owner."""
    return f"{task.request.hostname or socket.gethostname()}:{os.getpid()}"
