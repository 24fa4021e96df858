"""The sweeper hands silent or never-sent work back to the queue, once per interval."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from service.config import get_settings
from service.db import get_sessionmaker
from service.models import Document, DocumentStatus, Tenant, utcnow
from workers.sweeper import sweep


def _doc(session, tenant_id, status, **times):  # type: ignore[no-untyped-def]
    doc = Document(
        tenant_id=tenant_id,
        sha256=uuid.uuid4().hex * 2,
        filename="x.pdf",
        media_type="application/pdf",
        size_bytes=1,
        status=status,
        **times,
    )
    session.add(doc)
    return doc


def test_sweep_picks_silent_and_undispatched_only(database: str) -> None:
    settings = get_settings()
    now = utcnow()
    long_ago = now - timedelta(seconds=settings.stale_after_s * 10)
    with get_sessionmaker()() as session:
        tenant = Tenant(name=f"sweep-{uuid.uuid4().hex[:6]}")
        session.add(tenant)
        session.flush()
        silent = _doc(session, tenant.id, DocumentStatus.parsing, heartbeat_at=long_ago,
                      dispatched_at=long_ago)  # fmt: skip
        alive = _doc(session, tenant.id, DocumentStatus.parsing, heartbeat_at=now,
                     dispatched_at=long_ago)  # fmt: skip
        never_sent = _doc(session, tenant.id, DocumentStatus.queued, created_at=long_ago)
        just_uploaded = _doc(session, tenant.id, DocumentStatus.queued, created_at=now)
        in_queue = _doc(session, tenant.id, DocumentStatus.queued, created_at=long_ago,
                        dispatched_at=now - timedelta(minutes=5))  # fmt: skip
        done = _doc(session, tenant.id, DocumentStatus.parsed, heartbeat_at=long_ago)
        session.commit()
        ours = {d.id for d in (silent, alive, never_sent, just_uploaded, in_queue, done)}

        sent: list[str] = []
        sweep(session, settings, sent.append)
        assert {uuid.UUID(s) for s in sent} & ours == {silent.id, never_sent.id}

        # A second sweep right away sends nothing more: dispatched_at was moved on.
        again: list[str] = []
        sweep(session, settings, again.append)
        assert {uuid.UUID(s) for s in again} & ours == set()
        stamped = session.scalars(
            select(Document.dispatched_at).where(Document.id.in_([silent.id, never_sent.id]))
        ).all()
        assert all(t is not None and t >= now for t in stamped)
