"""An admitted request as its run sees it (read once, under the job's lease), and the
heartbeat that keeps that lease while the request runs."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ingestion.tasks.specs import CHAT_TASK
from service import ledger
from service.blobstore import BlobStore
from service.config import Settings
from service.models import Backend, Document, Job, JobStatus, KvLease, utcnow
from service.periodic import heartbeat
from workers.jobs.text import RequestText, build, chat

# A lost lease is part of the run's story: logged under the run's name, beside its other lines.
log = logging.getLogger("workers.jobs.run")


@dataclass(frozen=True)
class Admitted:
    job_id: uuid.UUID
    lease_id: uuid.UUID
    attempt: int
    backend_url: str
    model: str
    task: str
    params: dict[str, Any]
    request: RequestText
    role: str  # the backend's, for the metrics


class LeaseKeeper:
    """Renews the lease every heartbeat; sets `lost` when it cannot. A database error
    only skips a renewal (logged): the lease outlives `lease_ttl_s` of outage."""

    def __init__(self, sessions: sessionmaker[Session], a: Admitted, settings: Settings) -> None:
        self.sessions, self.a, self.settings = sessions, a, settings
        self.lost = threading.Event()
        self.tokens = 0
        every = settings.heartbeat_interval_s
        self._beats = heartbeat("job lease renewal", every, self._renew, log)

    def __enter__(self) -> LeaseKeeper:
        self._beats.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._beats.stop()

    def _renew(self) -> bool:
        with self.sessions() as s:
            now, ttl = utcnow(), self.settings.lease_ttl_s
            if not ledger.renew(s, self.a.job_id, now, ttl, lease_id=self.a.lease_id):
                log.warning("job %s lost its lease (cancelled or expired): aborting", self.a.job_id)
                self.lost.set()
                return False
            progress = {"stage": self.a.request.stage, "completion_tokens": self.tokens}
            s.execute(update(Job).where(Job.id == self.a.job_id).values(progress=progress))
            s.commit()
        return True


def load_admitted(session: Session, job_id: uuid.UUID, settings: Settings) -> Admitted | None:
    job = session.get(Job, job_id)
    lease = session.scalar(select(KvLease).where(KvLease.job_id == job_id))
    if job is None or lease is None or job.status != JobStatus.running:
        return None
    backend = session.get(Backend, lease.backend_id)
    doc = session.get(Document, job.document_id) if job.document_id else None
    if backend is None or backend.model is None or (doc is None and job.task != CHAT_TASK):
        return None
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            started_at=job.started_at or now,
            progress={"stage": "prefill", "completion_tokens": 0},
        )
    )
    session.commit()
    if doc is None:
        text = chat(job)
    else:
        text = build(session, job, doc, BlobStore(settings.blobs).path(doc.text_key or ""))
    return Admitted(
        job_id, lease.id, job.attempts, backend.url, backend.model, job.task, job.params, text,
        backend.role,
    )  # fmt: skip
