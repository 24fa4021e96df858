"""What every way of creating a job shares: what makes two requests the same one
(`Asked`), the job a repeated request answers with (a client's key, else one made of
the request), and the insert and commit of a new job, which a concurrent request with
the same key may win."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import NO_SYNC, rows_changed
from service.documents import get_owned as get_owned_document
from service.errors import Conflict, QuotaExceeded
from service.jobs import quota
from service.models import Job, JobStatus

# Without a client key, asking again for what failed or was cancelled is a retry.
_RETRIED = (JobStatus.failed, JobStatus.cancelled)


@dataclass(frozen=True)
class Asked:
    """What makes two job requests the same request: their document (None for a chat
    request), task, validated params and budget."""

    document_id: uuid.UUID | None
    task: str
    params: dict[str, Any]
    max_output_tokens: int
    pages: str | None = None  # the page range, canonical (`PageRange.canonical`)

    def auto_key(self) -> str:
        # Same document + task + params + budget (+ pages), no key given: the same job.
        # A job on the whole document keys as it did before pages existed, so a retry of
        # one made then still finds it.
        doc = None if self.document_id is None else str(self.document_id)
        body: list[Any] = [doc, self.task, self.params, self.max_output_tokens]
        if self.pages is not None:
            body.append({"pages": self.pages})
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return "auto:" + hashlib.sha256(text.encode()).hexdigest()

    def same_as(self, job: Job) -> bool:
        mine = (self.document_id, self.task, self.params, self.max_output_tokens, self.pages)
        return (job.document_id, job.task, job.params, job.max_output_tokens, job.pages) == mine


def existing(
    session: Session, tenant_id: uuid.UUID, asked: Asked, key: str | None
) -> tuple[str, Job | None]:
    """(the job's idempotency key, the job that already answers this request or None).
    Conflict when the client's key named a different request."""
    used = key or asked.auto_key()
    found = reusable(session, tenant_id, used, automatic=key is None)
    return used, None if found is None else same_request(found, asked)


def new_job(
    tenant_id: uuid.UUID,
    asked: Asked,
    key: str,
    now: datetime,
    batch_id: uuid.UUID | None,
    **values: Any,
) -> Job:
    """A queued job for the request, not yet added to the session (`insert` does)."""
    return Job(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        document_id=asked.document_id,
        task=asked.task,
        params=asked.params,
        max_output_tokens=asked.max_output_tokens,
        pages=asked.pages,
        idempotency_key=key,
        status=JobStatus.queued,
        created_at=now,
        batch_id=batch_id,
        **values,
    )


def insert(
    session: Session,
    settings: Settings,
    job: Job,
    asked: Asked,
    start: Callable[[], list[uuid.UUID]],
) -> tuple[Job, bool, list[uuid.UUID]]:
    """Insert the new `job` (its key found free), `start` it (the jobs whose tasks to
    send), check the tenant's quota again under lock and commit: (job, created, send),
    or the job of a concurrent request with the same key that won."""
    session.add(job)
    try:
        # Now, not at whichever query autoflushes first: a lost race on the key, or the
        # document deleted meanwhile, surfaces here or at the commit, and nowhere else.
        session.flush()
    except IntegrityError:
        return _lost_race(session, job.tenant_id, job.idempotency_key, asked)
    send = start()
    try:
        if job.batch_id is None:
            quota.check_room(session, settings, job.tenant_id, new_job=job.id)  # locked: exact
    except QuotaExceeded:
        session.rollback()
        raise
    try:
        session.commit()
    except IntegrityError:
        return _lost_race(session, job.tenant_id, job.idempotency_key, asked)
    # The answer is the job as stored: the router may have failed it (`end_tree`
    # writes past the ORM).
    session.refresh(job)
    return job, True, send


def _lost_race(
    session: Session, tenant_id: uuid.UUID, key: str, asked: Asked
) -> tuple[Job, bool, list[uuid.UUID]]:
    """The insert broke a constraint: a concurrent request with the same key won (its
    job answers), or the document was deleted meanwhile (404)."""
    session.rollback()
    winner = _by_key(session, tenant_id, key)
    if winner is None:
        if asked.document_id is not None:  # 404 if deleted meanwhile
            get_owned_document(session, tenant_id, asked.document_id)
        raise Conflict("conflict", "the request conflicted; retry it")
    return same_request(winner, asked), False, []


def reusable(session: Session, tenant_id: uuid.UUID, key: str, *, automatic: bool) -> Job | None:
    """The job that answers this request, or None: create one. A client's own key
    always names its job, whatever became of it (a retry with the same key is the
    same request); an automatic key reuses only a job that is live or succeeded. A
    failed or cancelled job gives its automatic key up (renamed after itself) in the
    transaction that creates its successor; a concurrent retry waits on that rename
    and is answered with the successor."""
    existing = _by_key(session, tenant_id, key)
    if existing is None or not automatic or existing.status not in _RETRIED:
        return existing
    free = update(Job).where(Job.id == existing.id, Job.idempotency_key == key)
    free = free.values(idempotency_key=f"{key}@{existing.id}")
    if rows_changed(session.execute(free, execution_options=NO_SYNC)):
        return None
    return _by_key(session, tenant_id, key)  # the other retry's job, committed


def _by_key(session: Session, tenant_id: uuid.UUID, key: str) -> Job | None:
    return session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key))


def same_request(job: Job, asked: Asked) -> Job:
    """The job a repeated request answers with; Conflict when its key named another."""
    if not asked.same_as(job):
        raise Conflict(
            "idempotency_key_reused",
            f"this idempotency key was used for a different request (job {job.id})",
        )
    return job
