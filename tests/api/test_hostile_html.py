"""Uploads whose bytes made the language sniff quadratic: real uploads through a real
worker end parsed, with the right language and their text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.test_documents import settled, upload
from tests.conftest import auth

pytestmark = pytest.mark.usefixtures("worker")

# 254 KiB of "<div " with no ">" and no lang on <html>: 94 s in the language sniff,
# 200 s for the whole parse.
UNCLOSED = b"<div " * 52_000


# Stuck-test bounds, not timings: the parse took 200 s before, seconds now.
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("html", "language"),
    [
        (b"<html><body><p>Plain words</p>" + UNCLOSED, None),
        (b'<html lang="de"><body><p>Worte vorne</p>' + UNCLOSED, "de"),
        (b"<html><body><p>Mots</p>" + UNCLOSED + b'<div lang="fr">mots</div>', "fr"),
    ],
)
def test_unclosed_tags_upload_is_parsed_with_its_language(
    client: Any, api_key: str, tmp_path: Path, html: bytes, language: str | None
) -> None:
    path = tmp_path / "page.html"
    path.write_bytes(html)
    resp = upload(client, api_key, path)
    assert resp.status_code == 202, resp.text
    doc = settled(client, api_key, resp.json()["id"], timeout=120)
    assert doc["status"] == "parsed", doc
    assert doc["media_type"] == "text/html"
    assert doc["language"] == language
    assert doc["page_count"] >= 1

    text = client.get(f"/v1/documents/{doc['id']}/text", headers=auth(api_key))
    assert text.status_code == 200
    first_words = html.split(b"<p>")[1].split(b"</p>")[0].decode()
    assert first_words in text.json()["pages"][0]["text"]
