"""The status page's recent failures are dated when they failed: a document that
failed long after its upload is not listed at its upload time."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.db import get_sessionmaker
from service.models import Document, DocumentStatus, Job, JobStatus, Tenant, utcnow
from service.overview.reads import recent_failures
from service.tenancy import Principal

pytestmark = pytest.mark.usefixtures("database")


def test_a_failed_document_is_dated_by_its_failure_and_sorted_by_it() -> None:
    now = utcnow()
    with get_sessionmaker()() as s:
        tenant = Tenant(name=f"failures-{uuid.uuid4().hex[:8]}")
        s.add(tenant)
        s.flush()
        doc = Document(
            tenant_id=tenant.id, sha256=uuid.uuid4().hex * 2, filename="late.pdf",
            media_type="application/pdf", size_bytes=1, status=DocumentStatus.failed,
            error_code="corrupt", error_reason="cannot open the file",
            created_at=now - timedelta(hours=3), updated_at=now - timedelta(minutes=1),
        )  # fmt: skip
        job = Job(
            tenant_id=tenant.id, task="summarize", max_output_tokens=8,
            idempotency_key=uuid.uuid4().hex, status=JobStatus.failed, error_code="x",
            created_at=now - timedelta(hours=2), finished_at=now - timedelta(hours=1),
        )  # fmt: skip
        s.add_all([doc, job])
        s.commit()
        failures = recent_failures(s, Principal(tenant.id, is_admin=False))
    assert [(f.kind, f.at) for f in failures] == [
        ("document", now - timedelta(minutes=1)),
        ("job", now - timedelta(hours=1)),
    ]
