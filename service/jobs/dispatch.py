"""Sending a job's task, for the API, the worker (map-reduce requests) and ingest."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy import update
from sqlalchemy.orm import Session

from service.models import Job, utcnow
from workers.celery_app import dispatch_job

log = logging.getLogger(__name__)


def send(session: Session, job_ids: Sequence[uuid.UUID]) -> None:
    """Queue the tasks of committed jobs and record when and which. A failure here
    loses nothing: the worker's sweeper sends the tasks of jobs nobody polls for."""
    sent: dict[uuid.UUID, str] = {}
    for job_id in job_ids:
        try:
            sent[job_id] = dispatch_job(str(job_id))
        except Exception:
            log.exception("could not queue job %s; the sweeper will", job_id)
    # Recorded in id order, the ledger's lock order (`workers/ledger.py`): the requests
    # of a map-reduce job may be being cancelled meanwhile.
    for job_id in sorted(sent):
        stmt = update(Job).where(Job.id == job_id)
        session.execute(stmt.values(dispatched_at=utcnow(), task_id=sent[job_id]))
    session.commit()
