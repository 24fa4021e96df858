"""SIGKILL a worker mid-parse: another worker finishes the document, parsed once."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.db import get_sessionmaker
from service.models import Document, DocumentTokenCount
from tests.api.test_documents import settled, upload
from tests.conftest import auth, corpus_file, start_worker, stop_worker, wait_for


def test_sigkilled_worker_is_replaced_and_document_parsed_once(
    client: Any, api_key: str, tmp_path: Path
) -> None:
    first = start_worker(tmp_path / "first.log")
    try:
        path = corpus_file("pdf/latex3-source3.pdf")  # 1,611 pages: seconds of work
        doc_id = upload(client, api_key, path).json()["id"]
        url = f"/v1/documents/{doc_id}"

        def midway() -> bool:
            body = client.get(url, headers=auth(api_key)).json()
            return body["status"] == "parsing" and 50 < body["progress"]["pages_done"] < 1500

        wait_for(midway, timeout=120, interval=0.05)
        stop_worker(first, signal.SIGKILL)
        killed_at = client.get(url, headers=auth(api_key)).json()
        assert killed_at["status"] == "parsing" and killed_at["attempts"] == 1
    finally:
        stop_worker(first, signal.SIGKILL)

    second = start_worker(tmp_path / "second.log")
    try:
        doc = settled(client, api_key, doc_id, timeout=240)
    finally:
        stop_worker(second)
    assert doc["status"] == "parsed", doc
    assert doc["page_count"] == 1611 and doc["attempts"] == 2
    with get_sessionmaker()() as session:
        row = session.get(Document, uuid.UUID(doc_id))
        assert row is not None and row.parse_count == 1
        roles = session.scalars(
            select(DocumentTokenCount.role).where(DocumentTokenCount.document_id == row.id)
        ).all()
        assert sorted(roles) == ["gemma", "scout"]
