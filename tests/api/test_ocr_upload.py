"""OCR through the API and a real worker: the upload's `ocr` and `ocr_languages`,
refused when bad before a byte of the file is stored, and a real scan that comes
back with text, tokens and its `ocr` warning."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from tests.api.test_documents import settled
from tests.conftest import _new_key, auth, corpus_file

pytestmark = pytest.mark.usefixtures("worker", "tesseract")


@pytest.fixture(scope="module")
def key(database: str) -> str:
    """A tenant of this module's own: no earlier upload of the same bytes (returned
    as it was, OCR'd or not) stands in for these."""
    return _new_key(f"ocr-{uuid.uuid4().hex[:6]}")


def _upload(client: Any, key: str, path: Path, query: str) -> Any:
    with path.open("rb") as f:
        return client.post(
            f"/v1/documents?{query}", headers=auth(key), files={"file": (path.name, f)}
        )


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[^\W\d_]{4,}", text)}


@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ("ocr=sometimes", "query.ocr", "auto"),
        ("ocr_languages=xyz", "query.ocr_languages", "xyz is not installed"),
        ("ocr_languages=de+en", "query.ocr_languages", "not a list"),
        ("ocr=off&ocr_languages=eng", "query.ocr_languages", "ocr=off"),
    ],
)
def test_bad_ocr_parameters_are_422_naming_the_parameter(
    client: Any, key: str, query: str, field: str, says: str
) -> None:
    path = corpus_file("pdf-scanned/ocrmypdf-linn.pdf")
    resp = _upload(client, key, path, query)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["param"] == field and says in error["reason"], error
    listed = client.get("/v1/documents?limit=200", headers=auth(key)).json()["items"]
    assert all(d["filename"] != path.name for d in listed)  # nothing stored


def test_a_real_scan_is_ocred_and_counted(client: Any, key: str) -> None:
    path = corpus_file("pdf-scanned/ocrmypdf-jbig2.pdf")
    resp = _upload(client, key, path, "ocr=auto&ocr_languages=eng")
    assert resp.status_code == 202, resp.text
    doc = settled(client, key, resp.json()["id"])
    assert doc["status"] == "parsed", doc
    assert doc["warnings"] == [{"page": 1, "warnings": ["ocr: eng 300dpi"]}]
    assert doc["text_chars"] > 1_000
    assert all(tc["count"] > 100 for tc in doc["token_counts"].values())
    text = client.get(f"/v1/documents/{doc['id']}/text", headers=auth(key)).json()
    (page,) = text["pages"]
    assert page["warnings"] == ["ocr: eng 300dpi"]
    with pymupdf.open(corpus_file("pdf-scanned/pikepdf-sandwich.pdf")) as sandwich:
        reference = _words(sandwich[0].get_text())
    assert len(reference & _words(page["text"])) >= 0.9 * len(reference)


def test_the_upload_language_is_used(client: Any, key: str) -> None:
    resp = _upload(
        client, key, corpus_file("pdf-scanned/ocrmypdf-francais.pdf"), "ocr_languages=fra"
    )
    doc = settled(client, key, resp.json()["id"])
    assert doc["status"] == "parsed", doc
    assert doc["warnings"] == [{"page": 1, "warnings": ["ocr: fra 300dpi"]}]


def test_force_ocrs_a_page_with_text(client: Any, key: str) -> None:
    # The sandwich's own layer is replaced by what Tesseract reads on its image.
    resp = _upload(client, key, corpus_file("pdf-scanned/pikepdf-sandwich.pdf"), "ocr=force")
    doc = settled(client, key, resp.json()["id"])
    assert doc["status"] == "parsed", doc
    assert doc["warnings"] == [{"page": 1, "warnings": ["ocr: eng 300dpi"]}]
