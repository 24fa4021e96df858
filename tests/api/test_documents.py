"""Upload → worker parse → read back, on real Postgres, Redis and a Celery worker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from ingestion.tokens.files import read_model
from service.config import get_settings
from tests.conftest import auth, corpus_file, wait_for

pytestmark = pytest.mark.usefixtures("worker")

DELETE_PDF = "pdf/us-va-form-21-0966.pdf"  # 2 pages


def upload(client: Any, key: str, path: Path, name: str | None = None) -> Any:
    with path.open("rb") as f:
        return client.post(
            "/v1/documents", headers=auth(key), files={"file": (name or path.name, f)}
        )


def settled(client: Any, key: str, doc_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/v1/documents/{doc_id}", headers=auth(key)).json()
        return body if body["status"] in ("parsed", "failed") else None

    return wait_for(done, timeout=timeout)


def test_pdf_is_parsed_counted_and_readable(client: Any, api_key: str) -> None:
    path = corpus_file("pdf/fhs-3.0.pdf")
    resp = upload(client, api_key, path)
    assert resp.status_code == 202, resp.text
    created = resp.json()
    assert created["status"] in ("queued", "parsing")
    assert created["media_type"] == "application/pdf"
    assert created["size_bytes"] == path.stat().st_size

    doc = settled(client, api_key, created["id"])
    assert doc["status"] == "parsed", doc
    assert doc["page_count"] == 50
    # No page wanted OCR, so none went out in slices.
    assert doc["progress"] == {
        "pages_done": 50,
        "page_count": 50,
        "ocr_pages_total": None,
        "ocr_pages_done": None,
    }
    assert doc["text_chars"] > 100_000
    for role in ("gemma", "scout"):
        tc = doc["token_counts"][role]
        assert tc["exact"] is True and tc["method"] == "tokenizer"
        # Which model's tokenizer counted: the one build-tokenizers.sh recorded.
        model = read_model(get_settings().tokenizers[role])
        assert model is not None and tc["model"] == model
        # English prose runs at roughly 3-5 characters per token in both vocabularies.
        assert doc["text_chars"] / 6 < tc["count"] < doc["text_chars"] / 2

    text = client.get(f"/v1/documents/{doc['id']}/text?pages=3-7", headers=auth(api_key))
    assert text.status_code == 200
    body = text.json()
    assert [p["number"] for p in body["pages"]] == [3, 4, 5, 6, 7]
    assert body["page_count"] == 50
    starts = [p["char_start"] for p in body["pages"]]
    assert starts == sorted(starts) and all(p["text"] for p in body["pages"])

    listed = client.get("/v1/documents?limit=200", headers=auth(api_key)).json()
    assert doc["id"] in [d["id"] for d in listed["items"]]


def test_same_bytes_same_tenant_is_not_parsed_twice(client: Any, api_key: str) -> None:
    path = corpus_file("pdf/latex3-styleguide.pdf")
    first = upload(client, api_key, path)
    doc = settled(client, api_key, first.json()["id"])
    again = upload(client, api_key, path, name="renamed.pdf")
    assert again.status_code == 200
    assert again.json()["id"] == doc["id"]
    assert again.json()["attempts"] == doc["attempts"] == 1


def test_tenants_are_isolated(client: Any, api_key: str, other_key: str) -> None:
    path = corpus_file("pdf/latex-ltnews01.pdf")
    doc = settled(client, api_key, upload(client, api_key, path).json()["id"])
    for method, url in [
        ("GET", f"/v1/documents/{doc['id']}"),
        ("GET", f"/v1/documents/{doc['id']}/text"),
        ("DELETE", f"/v1/documents/{doc['id']}"),
    ]:
        resp = client.request(method, url, headers=auth(other_key))
        assert resp.status_code == 404, (method, url, resp.text)
    others = client.get("/v1/documents", headers=auth(other_key)).json()
    assert doc["id"] not in [d["id"] for d in others["items"]]
    # The same bytes from another tenant are that tenant's own document.
    theirs = upload(client, other_key, path)
    assert theirs.status_code == 202 and theirs.json()["id"] != doc["id"]
    assert client.get(f"/v1/documents/{doc['id']}", headers=auth(api_key)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer ld_" + "x" * 43},
    ],
)
def test_missing_or_invalid_key_is_401(client: Any, headers: dict[str, str]) -> None:
    resp = client.get("/v1/documents", headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"


def test_delete_removes_document_and_text(client: Any, api_key: str, other_key: str) -> None:
    from service.blobstore import BlobStore
    from service.config import get_settings

    # No other test uploads this file, so no other document shares its original.
    path = corpus_file(DELETE_PDF)
    mine = settled(client, api_key, upload(client, api_key, path).json()["id"])
    theirs = settled(client, other_key, upload(client, other_key, path).json()["id"])
    assert mine["sha256"] == theirs["sha256"] and mine["status"] == "parsed"
    store = BlobStore(get_settings().blobs)
    original = store.original(mine["sha256"])
    assert original.is_file() and store.path(f"text/{mine['id']}.txt").is_file()

    assert client.delete(f"/v1/documents/{mine['id']}", headers=auth(api_key)).status_code == 204
    assert client.get(f"/v1/documents/{mine['id']}", headers=auth(api_key)).status_code == 404
    assert not store.path(f"text/{mine['id']}.txt").exists()
    # The other tenant's document still needs the shared original.
    assert original.is_file()
    text = client.get(f"/v1/documents/{theirs['id']}/text", headers=auth(other_key))
    assert text.status_code == 200 and text.json()["pages"][0]["text"]

    gone = client.delete(f"/v1/documents/{theirs['id']}", headers=auth(other_key))
    assert gone.status_code == 204
    assert not original.exists()
    assert not store.path(f"text/{theirs['id']}.txt").exists()


def test_unknown_document_is_404(client: Any, api_key: str) -> None:
    resp = client.get(f"/v1/documents/{uuid.uuid4()}", headers=auth(api_key))
    assert resp.status_code == 404
    assert client.get("/v1/documents/not-a-uuid", headers=auth(api_key)).status_code == 422


def test_health_and_openapi(client: Any) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    spec = client.get("/openapi.json").json()
    assert "/v1/documents/{document_id}/text" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_delete_while_parsing_leaves_no_text_behind(client: Any, api_key: str) -> None:
    from service.blobstore import BlobStore
    from service.config import get_settings

    path = corpus_file("pdf/latex-lwarp.pdf")  # 1,370 pages: seconds of parsing
    doc_id = upload(client, api_key, path).json()["id"]
    url = f"/v1/documents/{doc_id}"
    wait_for(
        lambda: client.get(url, headers=auth(api_key)).json()["progress"]["pages_done"] > 20,
        timeout=120,
        interval=0.05,
    )
    store = BlobStore(get_settings().blobs)
    text = store.path(f"text/{doc_id}.txt")

    def partial() -> list[Path]:
        return list(store.tmp.glob(f"{doc_id}.txt.*"))

    assert partial(), "the parse should be writing its text now"
    assert client.delete(url, headers=auth(api_key)).status_code == 204
    # The partial file goes only when the worker moves it into place at the end of
    # its parse; then it must find the document gone and remove the text.
    wait_for(lambda: not partial(), timeout=120, interval=0.05)
    wait_for(lambda: not text.exists(), timeout=30)
    assert client.get(url, headers=auth(api_key)).status_code == 404
