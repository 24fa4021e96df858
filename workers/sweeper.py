"""Re-dispatch documents whose worker went silent or whose message never left.

Runs in every worker's main process. Several sweepers may run at once: each
re-dispatch is guarded by a conditional update of `dispatched_at`, and the ingest
task's own claim makes a duplicate message a no-op anyway.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.db import rows_changed
from service.models import Document, DocumentStatus, utcnow
from workers.claims import silent_parse

log = logging.getLogger(__name__)
# A message the broker still holds is redelivered by the broker; only after this
# long do we assume it was lost with a worker's prefetch and send another.
_REQUEUE_AFTER = timedelta(hours=1)
# The API dispatches right after inserting; give it that moment before stepping in.
_UNDISPATCHED_GRACE = timedelta(seconds=10)


def sweep(session: Session, settings: Settings, dispatch: Callable[[str], None]) -> int:
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_s)
    silent = and_(
        silent_parse(stale),
        or_(Document.dispatched_at.is_(None), Document.dispatched_at < stale),
    )
    lost = and_(
        Document.status == DocumentStatus.queued,
        or_(
            and_(Document.dispatched_at.is_(None), Document.created_at < now - _UNDISPATCHED_GRACE),
            Document.dispatched_at < now - _REQUEUE_AFTER,
        ),
    )
    rows = session.execute(
        select(Document.id, Document.dispatched_at).where(or_(silent, lost)).limit(500)
    ).all()
    sent = 0
    for doc_id, seen in rows:
        if _take(session, doc_id, seen):
            dispatch(str(doc_id))
            sent += 1
    if sent:
        log.warning("sweeper re-dispatched %d document(s)", sent)
    return sent


def _take(session: Session, doc_id: uuid.UUID, seen: Any) -> bool:
    guard = Document.dispatched_at.is_(None) if seen is None else Document.dispatched_at == seen
    result = session.execute(
        update(Document)
        .where(Document.id == doc_id, guard)
        .values(dispatched_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return rows_changed(result) == 1


class SweeperThread(threading.Thread):
    def __init__(
        self,
        sessions: Callable[[], Session],
        settings: Settings,
        dispatch: Callable[[str], None],
    ) -> None:
        super().__init__(name="ingest-sweeper", daemon=True)
        self._sessions = sessions
        self._settings = settings
        self._dispatch = dispatch
        self.stopped = threading.Event()

    def run(self) -> None:
        while True:
            try:
                with self._sessions() as session:
                    sweep(session, self._settings, self._dispatch)
            except Exception:
                log.exception("sweep failed; trying again next interval")
            if self.stopped.wait(self._settings.sweep_interval_s):
                return
