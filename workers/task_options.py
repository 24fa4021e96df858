"""The options every Longdoc Celery task is declared with."""

from __future__ import annotations

import os
import socket
from typing import Any


def durable_task(name: str, soft_limit_s: int, hard_limit_s: int) -> dict[str, Any]:
    """Options of every Longdoc task: acknowledged after it ran, handed back if its
    worker process dies, limited below the broker's visibility timeout (checked in
    settings), retried while the database is away."""
    from sqlalchemy.exc import OperationalError

    return {
        "name": name,
        "bind": True,
        "acks_late": True,
        "reject_on_worker_lost": True,
        "soft_time_limit": soft_limit_s,
        "time_limit": hard_limit_s,
        "autoretry_for": (OperationalError,),
        "retry_backoff": True,
        "max_retries": 5,
    }


def worker_name(task: Any) -> str:
    """host:pid of the process running `task`: what claims record as their owner."""
    return f"{task.request.hostname or socket.gethostname()}:{os.getpid()}"
