"""An archive batch's OCR choice (`ocr`, `ocr_languages`, as a single upload takes
them) on the real services: refused when bad before a byte of the archive is read,
kept on the batch, given to every document its expansion makes (an existing one
keeps its own), shown in the document and batch views, and read by the worker's
parse of a tiny image-only PDF."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pymupdf
import pytest
from sqlalchemy import func, select

from ingestion.documents import ocr
from ingestion.documents.pagetext import NO_TEXT_LAYER
from service.batches.lifecycle import parse_id
from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.models import Batch, Document
from tests.api.test_archive_batches import _tenant, expanded, items_of, post
from tests.api.test_documents import settled
from tests.conftest import OCR_LANGUAGES, _new_key, api_settings, auth
from tests.hostile_archives import zip_bytes

pytestmark = pytest.mark.usefixtures("worker")

# A pack the OCR tests may count on wherever Tesseract is (tests/conftest.py); with
# none installed only the list's form is checked, so it passes there too.
LANGUAGE = "fra"
assert LANGUAGE in OCR_LANGUAGES


@pytest.fixture(scope="module")
def key(database: str) -> str:
    """A tenant of this module's own: its entries are new documents, not another
    module's uploads of the same bytes (which keep their own choice)."""
    return _new_key(f"batch-ocr-{uuid.uuid4().hex[:6]}")


def _tenant_batches(key: str) -> int:
    with get_sessionmaker()() as s:
        count = select(func.count()).where(Batch.tenant_id == _tenant(key))
        return s.scalar(count) or 0


def _texts(tag: str, n: int = 2) -> list[tuple[str, bytes]]:
    return [(f"notes/{i}.txt", f"note {i} of {tag}\n".encode() * 20) for i in range(n)]


def _documents(batch_id: str) -> list[Document]:
    ids = [i.document_id for i in items_of(batch_id)]
    assert ids and all(ids), ids
    with get_sessionmaker()() as s:
        return list(s.scalars(select(Document).where(Document.id.in_(ids))))


@pytest.fixture
def tiny_upload_limit(database: str) -> Iterator[Settings]:
    with api_settings(get_settings().model_copy(update={"archive_max_upload_bytes": 1024})) as s:
        yield s


@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ({"ocr": "sometimes"}, "query.ocr", "auto"),
        ({"ocr_languages": "de+en"}, "query.ocr_languages", "not a list"),
        ({"ocr_languages": "fra+fra"}, "query.ocr_languages", "twice"),
        ({"ocr": "off", "ocr_languages": LANGUAGE}, "query.ocr_languages", "ocr=off"),
    ],
)
def test_bad_ocr_parameters_are_422_before_the_archive_is_read(
    client: Any, key: str, tiny_upload_limit: Settings, query: dict[str, str], field: str, says: str
) -> None:
    before = _tenant_batches(key)
    # Over the upload limit and no archive: read, it would be a 413, so this answer
    # comes before the body is.
    body = os.urandom(4096)
    resp = post(client, key, body, **query)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["param"] == field and says in error["reason"], error
    if field == "query.ocr_languages":
        assert error["code"] == "bad_ocr_languages"
    assert _tenant_batches(key) == before  # nothing stored
    # The same body with good parameters is read, and is over the limit.
    assert post(client, key, body, ocr="off").status_code == 413


@pytest.mark.parametrize(
    ("query", "mode", "languages"),
    [
        ({"ocr": "off"}, "off", None),
        ({"ocr": "force"}, "force", None),
        ({"ocr_languages": LANGUAGE}, None, LANGUAGE),
        ({"ocr": "auto", "ocr_languages": f"eng+{LANGUAGE}"}, "auto", f"eng+{LANGUAGE}"),
    ],
)
def test_every_expanded_document_gets_the_batchs_choice(
    client: Any, key: str, query: dict[str, str], mode: str | None, languages: str | None
) -> None:
    resp = post(client, key, zip_bytes(_texts(uuid.uuid4().hex)), **query)
    assert resp.status_code == 202, resp.text
    chosen = {"mode": mode, "languages": languages}
    assert resp.json()["ocr"] == chosen
    batch_id = resp.json()["id"]
    assert expanded(client, key, batch_id)["ocr"] == chosen
    with get_sessionmaker()() as s:
        batch = s.get(Batch, parse_id(batch_id))
        assert batch is not None and (batch.ocr_mode, batch.ocr_languages) == (mode, languages)
    docs = _documents(batch_id)
    assert len(docs) == 2
    for doc in docs:
        assert doc.batch_id == parse_id(batch_id)
        assert (doc.ocr_mode, doc.ocr_languages) == (mode, languages)
        shown = client.get(f"/v1/documents/{doc.id}", headers=auth(key)).json()
        assert shown["ocr"] == chosen


def test_a_document_that_exists_keeps_its_choice_and_ocr_is_part_of_the_batch(
    client: Any, key: str
) -> None:
    tag = uuid.uuid4().hex
    (old_entry, new_entry) = _texts(tag)
    files = {"file": ("mine.txt", old_entry[1], "text/plain")}
    single = client.post("/v1/documents?ocr=force", headers=auth(key), files=files)
    assert single.status_code == 202, single.text
    assert single.json()["ocr"] == {"mode": "force", "languages": None}
    files = {"file": ("plain.txt", f"plain {tag}".encode(), "text/plain")}
    plain = client.post("/v1/documents", headers=auth(key), files=files).json()
    assert plain["ocr"] == {"mode": None, "languages": None}  # the settings decide
    archive = zip_bytes([old_entry, new_entry])
    first = post(client, key, archive, ocr="off")
    assert first.status_code == 202, first.text
    assert post(client, key, archive, ocr="off").json()["id"] == first.json()["id"]
    forced = post(client, key, archive, ocr="force")
    assert forced.status_code == 202 and forced.json()["id"] != first.json()["id"]
    expanded(client, key, first.json()["id"])
    by_name = {d.filename: d for d in _documents(first.json()["id"])}
    assert by_name["mine.txt"].ocr_mode == "force"  # uploaded before, as it was asked
    assert by_name["1.txt"].ocr_mode == "off"


def _image_pdf(tag: str) -> bytes:
    """One small page that is a white image, no text: a page `auto` and `force` OCR."""
    with pymupdf.open() as doc:
        page = doc.new_page(width=144, height=72)
        pix = pymupdf.Pixmap(pymupdf.csGRAY, (0, 0, 8, 8), False)
        pix.clear_with(255)
        page.insert_image(page.rect, pixmap=pix)
        doc.set_metadata({"title": tag})  # other bytes, so a new document each time
        data: bytes = doc.tobytes()
    return data


def _parsed_warnings(client: Any, key: str, batch_id: str) -> list[str]:
    expanded(client, key, batch_id)
    (doc,) = _documents(batch_id)
    shown = settled(client, key, str(doc.id))
    assert shown["status"] == "parsed", shown
    (page,) = shown["warnings"]
    assert page["page"] == 1
    words: list[str] = page["warnings"]
    return words


def test_the_worker_parses_with_the_batchs_choice(client: Any, key: str) -> None:
    off = post(client, key, zip_bytes([("scan.pdf", _image_pdf(uuid.uuid4().hex))]), ocr="off")
    assert off.status_code == 202, off.text
    query = {"ocr": "force", "ocr_languages": "eng"}
    forced = post(client, key, zip_bytes([("scan.pdf", _image_pdf(uuid.uuid4().hex))]), **query)
    assert forced.status_code == 202, forced.text
    assert _parsed_warnings(client, key, off.json()["id"]) == [NO_TEXT_LAYER]
    # Tesseract ran in the batch's language, or (where it is missing) the page says so.
    ran = "ocr: eng 300dpi" if ocr.installed_languages() else ocr.skipped("Tesseract is not")
    got = _parsed_warnings(client, key, forced.json()["id"])
    assert got[0] == NO_TEXT_LAYER and got[1].startswith(ran), got
