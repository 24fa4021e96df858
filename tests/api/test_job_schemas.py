"""Extract schemas whose answers could not be checked in bounded time are refused at
`POST /v1/jobs` (422, the limit named, no job stored); a schema whose patterns only
look dangerous is taken, and stored as sent, since RE2 checks it in linear time."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from ingestion.tasks.prompts import response_format
from ingestion.tasks.schema import SCHEMA_EXPANSION
from service.db import get_sessionmaker
from service.models import Job
from tests.api.test_documents import upload
from tests.conftest import auth
from tests.tasks.test_schema_validation import HOSTILE, chain


@pytest.fixture(scope="module")
def doc(client: Any, api_key: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    # No worker here: the document stays queued, and so do jobs on it.
    path = tmp_path_factory.mktemp("schemas") / "notes.txt"
    path.write_text("Invoice 17, due 2026-12-01, for 1,200 EUR.\n" * 20)
    resp = upload(client, api_key, path)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _jobs(doc: str) -> int:
    """Jobs on the test's own document: other modules' workers may add jobs elsewhere."""
    with get_sessionmaker()() as s:
        stmt = select(func.count()).select_from(Job).where(Job.document_id == uuid.UUID(doc))
        return int(s.scalar(stmt) or 0)


def _extract(client: Any, key: str, doc: str, schema: dict[str, Any]) -> Any:
    body = {"document_id": doc, "task": "extract", "params": {"schema": schema}}
    return client.post("/v1/jobs", headers=auth(key), json=body)


@pytest.mark.parametrize("keyword", ["anyOf", "oneOf"])
@pytest.mark.timeout(60)
def test_a_schema_that_expands_exponentially_is_422(
    client: Any, api_key: str, doc: str, keyword: str
) -> None:
    before = _jobs(doc)
    r = _extract(client, api_key, doc, chain(40, keyword))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_params" and error["field"] == "params.schema"
    assert f"the limit is {SCHEMA_EXPANSION:,}" in error["reason"]
    assert _jobs(doc) == before


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a)\\1$"}}},
         "cannot be used: invalid escape sequence"),
        ({"type": "object", "patternProperties": {"^(?!x)": {}}}, "Patterns are matched with RE2"),
        ({"type": "object", "unevaluatedProperties": False}, "is not supported"),
    ],
)  # fmt: skip
def test_a_schema_whose_check_would_not_be_linear_is_422(
    client: Any, api_key: str, doc: str, schema: dict[str, Any], reason: str
) -> None:
    before = _jobs(doc)
    r = _extract(client, api_key, doc, schema)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "params.schema"
    assert reason in r.json()["error"]["reason"]
    assert _jobs(doc) == before


def test_nested_quantifiers_are_taken_and_sent_to_the_model_as_given(
    client: Any, api_key: str, doc: str
) -> None:
    r = _extract(client, api_key, doc, HOSTILE)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued"
    with get_sessionmaker()() as s:
        stored = s.get(Job, uuid.UUID(job["id"]))
        assert stored is not None and stored.params == {"schema": HOSTILE}
        # What structured output gets is the client's schema, unchanged.
        fmt = response_format("extract", stored.params, "single")
    assert fmt is not None and fmt["json_schema"]["schema"] == HOSTILE
