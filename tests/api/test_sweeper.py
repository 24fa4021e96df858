"""The sweeper hands silent or never-sent work back to the queue, once per interval.

The database is the suite's, shared with every other module: the test sweeps only its
own tenant's rows, and checks that a stale-looking row of another tenant is left be."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.config import get_settings
from service.db import get_sessionmaker
from service.models import Document, DocumentStatus, Tenant, utcnow
from workers.sweeper import sweep


def _doc(
    session: Session, tenant_id: uuid.UUID, status: DocumentStatus, **times: datetime
) -> Document:
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


@pytest.fixture
def tenants(database: str) -> Iterator[tuple[Session, uuid.UUID, uuid.UUID]]:
    """(session, ours, another's); their rows are deleted after the test, so that no
    later module's worker finds these made-up documents to sweep."""
    with get_sessionmaker()() as session:
        ours, other = (
            Tenant(name=f"sweep-{uuid.uuid4().hex[:6]}"),
            Tenant(name=f"sweep-other-{uuid.uuid4().hex[:6]}"),
        )
        session.add_all([ours, other])
        session.commit()
        ids = [ours.id, other.id]
        try:
            yield session, ours.id, other.id
        finally:
            session.rollback()
            session.execute(delete(Document).where(Document.tenant_id.in_(ids)))
            session.execute(delete(Tenant).where(Tenant.id.in_(ids)))
            session.commit()


def test_sweep_picks_silent_and_undispatched_only(
    tenants: tuple[Session, uuid.UUID, uuid.UUID],
) -> None:
    session, tenant, other_tenant = tenants
    settings = get_settings()
    now = utcnow()
    long_ago = now - timedelta(seconds=settings.stale_after_s * 10)
    silent = _doc(session, tenant, DocumentStatus.parsing, heartbeat_at=long_ago,
                  dispatched_at=long_ago)  # fmt: skip
    _doc(session, tenant, DocumentStatus.parsing, heartbeat_at=now, dispatched_at=long_ago)
    never_sent = _doc(session, tenant, DocumentStatus.queued, created_at=long_ago)
    _doc(session, tenant, DocumentStatus.queued, created_at=now)  # just uploaded
    # Still in the queue: sent five minutes ago.
    _doc(session, tenant, DocumentStatus.queued, created_at=long_ago,
         dispatched_at=now - timedelta(minutes=5))  # fmt: skip
    _doc(session, tenant, DocumentStatus.parsed, heartbeat_at=long_ago)  # done
    # Another tenant's parse, as silent as ours: a sweep of our rows must not take it.
    theirs = _doc(session, other_tenant, DocumentStatus.parsing, heartbeat_at=long_ago,
                  dispatched_at=long_ago)  # fmt: skip
    session.commit()

    sent: list[str] = []
    assert sweep(session, settings, sent.append, tenant_id=tenant) == 2
    assert {uuid.UUID(s) for s in sent} == {silent.id, never_sent.id}

    # A second sweep right away sends nothing more: dispatched_at was moved on.
    again: list[str] = []
    assert sweep(session, settings, again.append, tenant_id=tenant) == 0
    assert again == []
    stamped = session.scalars(
        select(Document.dispatched_at).where(Document.id.in_([silent.id, never_sent.id]))
    ).all()
    assert all(t is not None and t >= now for t in stamped)

    untouched = session.scalar(select(Document.dispatched_at).where(Document.id == theirs.id))
    assert untouched == long_ago
    # The other tenant's own sweep does take it: it was stale, only not ours.
    theirs_sent: list[str] = []
    assert sweep(session, settings, theirs_sent.append, tenant_id=other_tenant) == 1
    assert theirs_sent == [str(theirs.id)]
