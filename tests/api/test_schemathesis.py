"""The API as its OpenAPI document describes it: schemathesis generates requests for
every operation (valid and invalid ones, uploads of its own bytes included) with a
valid key, and every answer must be no 5xx, a declared status with a declared content
type and headers, and a body of the declared schema. Each case runs as generated (ids
mostly unknown: 404s) and again with the ids of real rows, so the success paths are
checked too. Derandomized; LONGDOC_SCHEMATHESIS_RANDOM=1 and
LONGDOC_SCHEMATHESIS_EXAMPLES=N explore further."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.main import app
from tests.api.test_documents import settled
from tests.conftest import auth

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def real_ids(client: Any, api_key: str, worker: Any) -> dict[str, str]:
    """A parsed document (so that its text can be read), a job on it, and a file."""
    doc = _upload(client, api_key)
    assert settled(client, api_key, doc)["status"] == "parsed"
    job = client.post(
        "/v1/jobs", headers=auth(api_key), json={"document_id": doc, "task": "summarize"}
    )
    assert job.status_code == 202, job.text
    return {"document_id": doc, "job_id": job.json()["id"], "file_id": _file(client, api_key)}


def _upload(client: Any, key: str) -> str:
    body = f"A document for schemathesis, {uuid.uuid4()}.\n".encode()
    resp = client.post("/v1/documents", headers=auth(key), files={"file": ("s.txt", body)})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _file(client: Any, key: str) -> str:
    line = f'{{"custom_id": "{uuid.uuid4()}", "method": "POST", "url": "/v1/jobs"}}\n'
    resp = client.post(
        "/v1/files",
        headers=auth(key),
        data={"purpose": "batch"},
        files={"file": ("requests.jsonl", line.encode())},
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


# Loaded at import, from the app itself (its OpenAPI needs no database); the requests
# go to the same app in process, on the test run's Postgres. (pytest 9 breaks
# schemathesis.pytest.from_fixture.)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("LONGDOC_SCHEMATHESIS_EXAMPLES", "30")),
    derandomize=os.environ.get("LONGDOC_SCHEMATHESIS_RANDOM") is None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_matches_its_schema(
    case: Any, client: Any, api_key: str, real_ids: dict[str, str]
) -> None:
    case.call_and_validate(headers=auth(api_key), checks=CHECKS)
    params = case.path_parameters or {}
    if set(params) & set(real_ids):
        real = dict(real_ids)
        if case.method.upper() == "DELETE":  # a document and a file of its own to delete
            real["document_id"] = _upload(client, api_key)
            real["file_id"] = _file(client, api_key)
        case.path_parameters = {**params, **{k: real[k] for k in params if k in real}}
        case.call_and_validate(headers=auth(api_key), checks=CHECKS)


@pytest.mark.parametrize("path", ["/v1/documents", "/v1/jobs"])
def test_offset_past_64_bits_is_refused_not_a_500(client: Any, api_key: str, path: str) -> None:
    """What schemathesis found: the database's bigint overflowed into a 500."""
    resp = client.get(path, headers=auth(api_key), params={"offset": 2**63})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["field"] == "query.offset"
