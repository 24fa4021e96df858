"""Each bad input gets a clear 4xx or a `failed` status with a reason, and the
service stays healthy with every other document untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.test_documents import settled, upload
from tests.conftest import auth, corpus_file

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture(scope="module")
def bystander(client: Any, api_key: str, worker: Any) -> dict[str, Any]:
    """A good document that must come through every bad input unchanged."""
    doc = settled(
        client, api_key, upload(client, api_key, corpus_file("pdf/r-data.pdf")).json()["id"]
    )
    assert doc["status"] == "parsed"
    return doc


@pytest.fixture(autouse=True)
def service_stays_healthy(client: Any, api_key: str, bystander: dict[str, Any]) -> Any:
    yield
    assert client.get("/readyz").status_code == 200
    now = client.get(f"/v1/documents/{bystander['id']}", headers=auth(api_key)).json()
    assert now["status"] == "parsed"
    assert now["token_counts"] == bystander["token_counts"]
    assert now["attempts"] == bystander["attempts"]


def _failed(client: Any, key: str, path: Path, name: str | None = None) -> dict[str, Any]:
    resp = upload(client, key, path, name)
    assert resp.status_code == 202, resp.text
    doc = settled(client, key, resp.json()["id"])
    assert doc["status"] == "failed", doc
    assert doc["error"]["reason"], doc
    return doc


def test_corrupt_pdf_fails_with_reason(client: Any, api_key: str, tmp_path: Path) -> None:
    real = corpus_file("pdf/r-lang.pdf").read_bytes()
    bad = tmp_path / "corrupt.pdf"
    # A real header followed by garbage where the body and xref should be.
    bad.write_bytes(real[:1024] + bytes(range(256)) * 64)
    doc = _failed(client, api_key, bad)
    assert doc["error"]["code"] in ("corrupt", "empty")


def test_truncated_pdf_never_hangs(client: Any, api_key: str, tmp_path: Path) -> None:
    real = corpus_file("pdf/r-intro.pdf").read_bytes()
    cut = tmp_path / "truncated.pdf"
    cut.write_bytes(real[: len(real) // 3])
    resp = upload(client, api_key, cut)
    assert resp.status_code == 202
    doc = settled(client, api_key, resp.json()["id"])
    # MuPDF may repair a truncated file; either way it ends in a final state with a reason.
    if doc["status"] == "failed":
        assert doc["error"]["code"] in ("corrupt", "empty")
    else:
        assert doc["page_count"] >= 1


def test_encrypted_pdf_without_password(client: Any, api_key: str) -> None:
    doc = _failed(client, api_key, corpus_file("derived/r-intro.aes256-userpw.pdf"))
    assert doc["error"]["code"] == "encrypted"
    assert "password" in doc["error"]["reason"].lower()


def test_zero_byte_file_is_refused(client: Any, api_key: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    resp = upload(client, api_key, empty)
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "empty"


def test_image_only_pdf_parses_with_warning(client: Any, api_key: str) -> None:
    # Without OCR (tests/api/test_ocr_upload.py has it on): today's warning, no text.
    path = corpus_file("pdf-scanned/ocrmypdf-cardinal.pdf")
    with path.open("rb") as f:
        resp = client.post(
            "/v1/documents?ocr=off", headers=auth(api_key), files={"file": (path.name, f)}
        )
    doc = settled(client, api_key, resp.json()["id"])
    assert doc["status"] == "parsed", doc
    assert doc["page_count"] == 4
    assert {w["page"] for w in doc["warnings"]} == set(range(1, 5))
    assert all("no_text_layer" in w["warnings"] for w in doc["warnings"])
    assert {tc["count"] for tc in doc["token_counts"].values()} == {0}


def test_odt_is_415_with_list(client: Any, api_key: str) -> None:
    # PyMuPDF opens an ODT as one blank page; Longdoc refuses it instead.
    resp = upload(client, api_key, corpus_file("odt/live-manual.en.odt"))
    assert resp.status_code == 415, resp.text
    error = resp.json()["error"]
    assert error["code"] == "unsupported_type" and "application/pdf" in error["supported"]
    assert error["reason"]


def test_pdf_header_on_junk_fails_with_reason(client: Any, api_key: str) -> None:
    doc = _failed(client, api_key, corpus_file("pdf-problem/ocrmypdf-invalid.pdf"))
    assert doc["error"]["code"] in ("corrupt", "empty")


def test_binary_junk_is_415(client: Any, api_key: str, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 100)
    assert upload(client, api_key, junk).status_code == 415


def test_filename_with_path_and_control_chars(client: Any, api_key: str) -> None:
    path = corpus_file("pdf/latex-usrguide.pdf")
    resp = upload(client, api_key, path, name="../../etc/\x00pa\x1bss\nwd\\..\\evil.pdf")
    assert resp.status_code in (200, 202)
    name = resp.json()["filename"]
    assert name == "evil.pdf"


def test_page_count_over_limit_fails(client: Any, api_key: str) -> None:
    doc = _failed(client, api_key, corpus_file("pdf/r-fullrefman.pdf"))
    assert doc["error"]["code"] == "too_many_pages"
    assert "2000" in doc["error"]["reason"] and "2415" in doc["error"]["reason"]


def test_not_multipart_is_415(client: Any, api_key: str) -> None:
    resp = client.post(
        "/v1/documents",
        headers={**auth(api_key), "Content-Type": "application/pdf"},
        content=b"%PDF-1.4",
    )
    assert resp.status_code == 415


def test_missing_file_field_is_422(client: Any, api_key: str) -> None:
    resp = client.post("/v1/documents", headers=auth(api_key), files={"other": ("a.pdf", b"x")})
    assert resp.status_code == 422


@pytest.mark.parametrize("pages", ["0-3", "7-3", "abc", "1-100000", "-", "3--4"])
def test_bad_page_range_is_422(
    client: Any, api_key: str, bystander: dict[str, Any], pages: str
) -> None:
    url = f"/v1/documents/{bystander['id']}/text"
    assert client.get(url, params={"pages": pages}, headers=auth(api_key)).status_code == 422
