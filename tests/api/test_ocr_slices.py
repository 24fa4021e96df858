"""A real scan of more pages than the ingest task recognises itself goes out in slices
on the `ocr` queue to a real worker, and comes back joined: the same text and
warnings as recognising it inline, progress per page, nothing left behind."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select

from ingestion.documents.parse import open_document
from service.config import get_settings
from service.db import get_sessionmaker
from service.models import Document, OcrPage
from service.ocr_options import render_options
from tests.api.test_documents import settled
from tests.conftest import _new_key, auth, corpus_file

pytestmark = pytest.mark.usefixtures("worker", "tesseract")
SCAN = "pdf-scanned/ocrmypdf-multipage.pdf"  # 6 pages, 5 of them images only


@pytest.fixture(scope="module")
def key(database: str) -> str:
    return _new_key(f"ocr-slices-{uuid.uuid4().hex[:6]}")


def test_a_long_scan_is_recognised_in_slices_and_joined_as_inline(client: Any, key: str) -> None:
    settings = get_settings()
    path = corpus_file(SCAN)
    with path.open("rb") as f:
        resp = client.post(
            "/v1/documents?ocr_languages=eng", headers=auth(key), files={"file": (path.name, f)}
        )
    assert resp.status_code == 202, resp.text
    doc = settled(client, key, resp.json()["id"], timeout=600)
    assert doc["status"] == "parsed", doc
    # More than the inline few: these went out as slices, and all came back.
    assert settings.ocr_inline_max_pages < 5
    assert doc["progress"]["ocr_pages_total"] == doc["progress"]["ocr_pages_done"] == 5
    assert doc["ocr"] == {"mode": None, "languages": "eng"}
    text = client.get(f"/v1/documents/{doc['id']}/text", headers=auth(key)).json()
    pages = {p["number"]: p for p in text["pages"]}
    # As the worker recognises a page inline: its render and its engine.
    inline = replace(render_options(settings), languages="eng")
    with open_document(path, "application/pdf", max_pages=100, ocr_options=inline) as parsed:
        alone = {p.number: p for p in parsed.pages()}
    assert sorted(pages) == sorted(alone) == [1, 2, 3, 4, 5, 6]
    for number, page in pages.items():
        assert page["text"] == alone[number].text, number
        assert page["warnings"] == list(alone[number].warnings), number
    assert all(pages[n]["warnings"][0].startswith("ocr: eng ") for n in (1, 2, 3, 5, 6))
    assert not any(w.startswith("ocr") for w in pages[4]["warnings"])  # its own text layer
    # The 30-inch page was read at a lower resolution than the others, under the cap.
    assert pages[2]["warnings"][0] != f"ocr: eng {settings.ocr_dpi}dpi"
    assert all(tc["count"] > 50 for tc in doc["token_counts"].values())
    with get_sessionmaker()() as s:
        left = s.scalar(select(func.count()).where(OcrPage.document_id == uuid.UUID(doc["id"])))
        row = s.get(Document, uuid.UUID(doc["id"]))
        assert left == 0 and row is not None and row.ocr_join_sent_at is not None
