"""Hostile DOCX uploads through the API and a real worker: each ends `parsed` or
`failed` with the right reason, without the parse running away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.test_documents import settled, upload
from tests.conftest import auth
from tests.ingestion.hostile_docx import empty_paragraphs, page_breaks, write_docx

pytestmark = pytest.mark.usefixtures("worker")


def test_blank_paragraphs_parse(client: Any, api_key: str, tmp_path: Path) -> None:
    # 160,000 empty paragraphs in 2 KB of ZIP: 188 s for the old reader, over this wait.
    path = write_docx(tmp_path / "blank.docx", empty_paragraphs(160_000))
    resp = upload(client, api_key, path)
    assert resp.status_code == 202, resp.text
    doc = settled(client, api_key, resp.json()["id"], timeout=120)
    assert doc["status"] == "parsed", doc
    assert doc["page_count"] == 2
    text = client.get(f"/v1/documents/{doc['id']}/text", headers=auth(api_key)).json()
    assert [p["text"] for p in text["pages"]] == ["first", "last"]


def test_pages_over_the_limit_fail_before_the_end(
    client: Any, api_key: str, tmp_path: Path
) -> None:
    # LONGDOC_MAX_PAGES is 2000 in the tests. The XML breaks off after page 2,100:
    # only a parser that stops at page 2,001 can say why the document is refused.
    path = write_docx(tmp_path / "pages.docx", page_breaks(2100), tail=b"<w:p><w:r><w:t>cut")
    resp = upload(client, api_key, path)
    assert resp.status_code == 202, resp.text
    doc = settled(client, api_key, resp.json()["id"])
    assert doc["status"] == "failed", doc
    assert doc["error"]["code"] == "too_many_pages"
    assert "2000" in doc["error"]["reason"]
