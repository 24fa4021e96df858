"""Bad job requests: each a clear 4xx, or a `failed` job with a reason; nothing else
is created or lost."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from service.db import get_sessionmaker
from service.models import Job
from tests.conftest import auth
from tests.jobs.conftest import SMALL_PDF, Deployment, corpus_pdf, upload, wait_job

pytestmark = pytest.mark.usefixtures("job_worker")
Client = Any


@pytest.fixture(scope="module")
def doc(client: Client, api_key: str, deployment: Deployment) -> str:
    return upload(client, api_key, SMALL_PDF)


def _jobs(doc: str) -> int:
    """Jobs on the test's own document: other modules' workers may add jobs elsewhere."""
    with get_sessionmaker()() as s:
        stmt = select(func.count()).select_from(Job).where(Job.document_id == uuid.UUID(doc))
        return int(s.scalar(stmt) or 0)


BAD = [
    ({"task": "translate"}, "task"),
    ({"task": "extract", "params": {"schema": {"type": "nonsense"}}}, "schema"),
    ({"task": "extract", "params": {"schema": "not an object"}}, "schema"),
    ({"task": "extract", "params": {"schema": {"$ref": "https://evil.example/s.json"}}}, "schema"),
    ({"task": "ask", "params": {"questions": []}}, "questions"),
    ({"task": "ask", "params": {"questions": ["  "]}}, "questions"),
    ({"task": "ask", "params": {"questions": ["q"] * 10_000}}, "questions"),
    ({"task": "classify", "params": {"labels": []}}, "labels"),
    ({"task": "classify", "params": {"labels": ["a", "a"]}}, "labels"),
    ({"task": "prompt", "params": {}}, "instruction"),
    ({"task": "prompt", "params": {"instruction": "x" * 1_000_000}}, "instruction"),
    ({"task": "summarize", "params": {"unexpected": 1}}, "unexpected"),
]


@pytest.mark.parametrize(("body", "field"), BAD)
def test_bad_task_or_params_is_422(
    client: Client, api_key: str, doc: str, body: dict[str, Any], field: str
) -> None:
    before = _jobs(doc)
    r = client.post("/v1/jobs", headers=auth(api_key), json={"document_id": doc, **body})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_params" and field in (error["field"] + error["reason"])
    assert _jobs(doc) == before


@pytest.mark.parametrize("max_out", [0, -5, "many", 10**12])
def test_bad_budget_is_422(client: Client, api_key: str, doc: str, max_out: object) -> None:
    r = client.post(
        "/v1/jobs",
        headers=auth(api_key),
        json={"document_id": doc, "task": "summarize", "max_output_tokens": max_out},
    )
    assert r.status_code == 422, r.text


def test_budget_beyond_every_context_is_422(client: Client, api_key: str, doc: str) -> None:
    # 9,000 output tokens: more than either server's whole context (2,048 and 8,192).
    r = client.post(
        "/v1/jobs",
        headers=auth(api_key),
        json={"document_id": doc, "task": "summarize", "max_output_tokens": 9000},
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "bad_budget" and error["field"] == "max_output_tokens"
    assert "8,192" in error["reason"]


def test_other_tenants_document_is_404(client: Client, other_key: str, doc: str) -> None:
    r = client.post(
        "/v1/jobs", headers=auth(other_key), json={"document_id": doc, "task": "summarize"}
    )
    assert r.status_code == 404
    missing = client.post(
        "/v1/jobs",
        headers=auth(other_key),
        json={"document_id": str(uuid.uuid4()), "task": "summarize"},
    )
    assert missing.status_code == 404


def test_other_tenants_job_is_404(client: Client, api_key: str, other_key: str, doc: str) -> None:
    r = client.post(
        "/v1/jobs",
        headers=auth(api_key),
        json={"document_id": doc, "task": "summarize", "max_output_tokens": 16},
    )
    job_id = r.json()["id"]
    for path in ("", "/result"):
        assert client.get(f"/v1/jobs/{job_id}{path}", headers=auth(other_key)).status_code == 404
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(other_key)).status_code == 404
    assert job_id not in {
        j["id"] for j in client.get("/v1/jobs", headers=auth(other_key)).json()["items"]
    }
    wait_job(client, api_key, job_id)


def test_failed_document_is_409(client: Client, api_key: str, deployment: Deployment) -> None:
    path = corpus_pdf("pdf-problem/ocrmypdf-invalid.pdf")
    with path.open("rb") as f:
        up = client.post(
            "/v1/documents",
            headers=auth(api_key),
            files={"file": (path.name, f, "application/pdf")},
        )
    doc_id = up.json()["id"]
    from tests.conftest import wait_for

    wait_for(
        lambda: (
            client.get(f"/v1/documents/{doc_id}", headers=auth(api_key)).json()["status"]
            in ("failed", "parsed")
        ),
        timeout=60,
    )
    r = client.post(
        "/v1/jobs", headers=auth(api_key), json={"document_id": doc_id, "task": "summarize"}
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "document_failed"


def test_upload_with_a_bad_task_stores_nothing(client: Client, api_key: str) -> None:
    before = client.get("/v1/documents", headers=auth(api_key)).json()["total"]
    path = corpus_pdf("pdf/fhs-3.0.pdf")
    for params in (
        {"task": "nope"},
        {"task": "ask", "params": "{not json"},
        {"params": "{}"},
        {"task": "summarize", "max_output_tokens": 0},
    ):
        with path.open("rb") as f:
            r = client.post(
                "/v1/documents",
                params=params,
                headers=auth(api_key),
                files={"file": (path.name, f, "application/pdf")},
            )
        assert r.status_code == 422, (params, r.text)
    assert client.get("/v1/documents", headers=auth(api_key)).json()["total"] == before


def test_job_on_a_document_still_parsing_is_planned_later(
    client: Client, api_key: str, deployment: Deployment
) -> None:
    path = corpus_pdf("pdf-scanned/pikepdf-sandwich.pdf")  # used by no other test
    with path.open("rb") as f:
        up = client.post(
            "/v1/documents",
            headers=auth(api_key),
            params={
                "task": "classify",
                "max_output_tokens": 96,
                "params": '{"labels": ["manual", "novel"]}',
            },
            files={"file": (path.name, f, "application/pdf")},
        )
    job = up.json()["job"]
    assert up.status_code == 202 and job["status"] == "queued" and job["plan"] is None
    done = wait_job(client, api_key, job["id"])
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    assert done["plan"]["kind"] == "single"
