"""Every refusal has one body, `{"error": {"code", "reason", "field"?}}`, whoever
raises it: the core's domain errors, FastAPI's validation, Starlette's routing, the
body-limit and load-shedding middlewares; and the OpenAPI document says so."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api import load_shedding, problems
from service.api.responses import ErrorResponse
from service.config import get_settings
from service.db import get_sessionmaker
from service.keys import create_key
from tests.conftest import auth


def error_of(resp: Any, status: int) -> dict[str, Any]:
    """The `error` object of a refusal with this status, checked against the model."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    payload = resp.json()
    assert set(payload) == {"error"}, payload
    ErrorResponse.model_validate(payload)
    error: dict[str, Any] = payload["error"]
    assert error["code"] and error["reason"], error
    # The names the SDKs read: `message` always, `param` where a field is named.
    assert error["message"] == error["reason"] and error.get("param") == error.get("field")
    return error


def upload(client: Any, key: str, body: bytes, query: str = "") -> Any:
    files = {"file": ("notes.txt", body, "text/plain")}
    return client.post(f"/v1/documents{query}", headers=auth(key), files=files)


@pytest.fixture
def fresh_key(database: str) -> str:
    with get_sessionmaker()() as s:
        return create_key(s, f"errors-{uuid.uuid4().hex[:8]}")


def test_unknown_document_is_404_not_found(client: Any, api_key: str) -> None:
    resp = client.get(f"/v1/documents/{uuid.uuid4()}", headers=auth(api_key))
    error = error_of(resp, 404)
    assert error["code"] == "not_found" and "document" in error["reason"]
    assert "field" not in error


def test_unknown_route_and_wrong_method(client: Any, api_key: str) -> None:
    assert error_of(client.get("/v1/nothing-here", headers=auth(api_key)), 404)["code"] == (
        "not_found"
    )
    wrong = client.put("/v1/jobs", headers=auth(api_key))
    assert error_of(wrong, 405)["code"] == "method_not_allowed"
    assert wrong.headers["allow"]  # the headers Starlette sets survive the new body


def test_missing_and_invalid_keys_are_401_with_a_challenge(client: Any) -> None:
    missing = client.get("/v1/jobs")
    assert error_of(missing, 401)["code"] == "missing_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.get("/v1/jobs", headers=auth("ld_" + "x" * 40))
    assert error_of(wrong, 401)["code"] == "invalid_key"
    wrong = client.get("/v1/jobs", headers={"x-api-key": "ld_" + "x" * 40})
    assert error_of(wrong, 401)["code"] == "invalid_key"


def test_x_api_key_is_the_same_key(client: Any, api_key: str, other_key: str) -> None:
    # Anthropic's SDK sends its key in x-api-key; it is the same key as a Bearer one.
    files = {"file": ("x-api-key.txt", uuid.uuid4().hex.encode(), "text/plain")}
    made = client.post("/v1/documents", headers={"x-api-key": api_key}, files=files)
    assert made.status_code == 202, made.text
    doc = made.json()["id"]

    def listed(headers: dict[str, str]) -> set[str]:
        r = client.get("/v1/documents", headers=headers, params={"limit": 200})
        assert r.status_code == 200, r.text
        return {d["id"] for d in r.json()["items"]}

    assert doc in listed(auth(api_key)) and doc in listed({"x-api-key": api_key})
    assert doc not in listed({"x-api-key": other_key})
    same = client.get("/v1/jobs", headers={**auth(api_key), "x-api-key": api_key})
    assert same.status_code == 200, same.text
    both = client.get("/v1/jobs", headers={**auth(api_key), "x-api-key": other_key})
    assert error_of(both, 401)["code"] == "conflicting_keys"
    empty = client.get("/v1/jobs", headers={"x-api-key": ""})
    assert error_of(empty, 401)["code"] == "missing_key"


def test_oversize_upload_is_413(client: Any, api_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_settings(), "max_upload_bytes", 100)
    error = error_of(upload(client, api_key, b"x" * 1_000), 413)
    assert error["code"] == "upload_too_large" and "100 bytes" in error["reason"]


def test_oversize_json_body_is_413(client: Any, api_key: str) -> None:
    limit = get_settings().max_json_body_bytes
    body = json.dumps({"document_id": str(uuid.uuid4()), "task": "x" * (limit + 1)})
    resp = client.post(
        "/v1/jobs",
        headers={**auth(api_key), "content-type": "application/json"},
        content=body.encode(),
    )
    assert error_of(resp, 413)["code"] == "body_too_large"


def test_validation_names_the_field(client: Any, api_key: str) -> None:
    error = error_of(client.get("/v1/documents?limit=0", headers=auth(api_key)), 422)
    assert (error["code"], error["field"]) == ("greater_than_equal", "query.limit")
    assert "errors" not in error  # one issue: nothing more to list

    body = {"document_id": "not-a-uuid", "task": "summarize", "max_output_tokens": 0}
    error = error_of(client.post("/v1/jobs", headers=auth(api_key), json=body), 422)
    fields = {e["field"] for e in error["errors"]}
    assert fields == {"body.document_id", "body.max_output_tokens"}
    assert error["field"] in fields


def test_the_core_refusals_name_their_field(client: Any, api_key: str) -> None:
    body = {"document_id": str(uuid.uuid4()), "task": "extract", "params": {"schema": 3}}
    error = error_of(client.post("/v1/jobs", headers=auth(api_key), json=body), 422)
    assert (error["code"], error["field"]) == ("bad_params", "params.schema")

    resp = upload(client, api_key, b"notes\n", "?task=ask&params={not json")
    error = error_of(resp, 422)
    assert (error["code"], error["field"]) == ("bad_params", "query.params")

    resp = upload(client, api_key, b"notes\n", "?task=summarize&max_output_tokens=0")
    assert error_of(resp, 422)["field"] == "query.max_output_tokens"


def test_conflicts_are_409_with_their_code(client: Any, api_key: str) -> None:
    # No worker runs in this module: the document stays queued, its text unwritten.
    doc = upload(client, api_key, f"conflict {uuid.uuid4()}\n".encode())
    assert doc.status_code == 202, doc.text
    doc_id = doc.json()["id"]
    text = client.get(f"/v1/documents/{doc_id}/text", headers=auth(api_key))
    assert error_of(text, 409)["code"] == "not_parsed"

    key = str(uuid.uuid4())
    first = {"document_id": doc_id, "task": "summarize", "idempotency_key": key}
    assert client.post("/v1/jobs", headers=auth(api_key), json=first).status_code == 202
    reused = client.post(
        "/v1/jobs", headers=auth(api_key), json={**first, "params": {"focus": "dates"}}
    )
    assert error_of(reused, 409)["code"] == "idempotency_key_reused"

    in_use = client.delete(f"/v1/documents/{doc_id}", headers=auth(api_key))
    error = error_of(in_use, 409)
    assert error["code"] == "document_in_use" and len(error["job_ids"]) == 1
    deleted = client.delete(f"/v1/documents/{doc_id}?cancel_jobs=true", headers=auth(api_key))
    assert deleted.status_code == 204, deleted.text


def test_quota_is_429_with_retry_after(
    client: Any, fresh_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "tenant_max_queued_jobs", 1)
    doc = upload(client, fresh_key, f"quota {uuid.uuid4()}\n".encode()).json()["id"]
    body = {"document_id": doc, "task": "summarize"}
    assert client.post("/v1/jobs", headers=auth(fresh_key), json=body).status_code == 202
    over = client.post(
        "/v1/jobs", headers=auth(fresh_key), json={**body, "params": {"focus": "names"}}
    )
    assert error_of(over, 429)["code"] == "too_many_queued_jobs"
    assert over.headers["retry-after"] == str(settings.tenant_retry_after_s)


def test_load_shedding_answers_in_the_same_shape() -> None:
    resp = load_shedding.overloaded("10 requests running and 5 waiting", 7)
    payload = json.loads(bytes(resp.body))
    assert resp.status_code == 503 and resp.headers["retry-after"] == "7"
    assert payload["error"]["code"] == "overloaded"
    ErrorResponse.model_validate(payload)


def test_an_unexpected_exception_is_a_500_in_the_same_shape() -> None:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        error = error_of(c.get("/boom"), 500)
    assert error["code"] == "internal_error" and "a bug" not in error["reason"]


def test_openapi_declares_the_error_body_for_every_error_response(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    assert "ErrorResponse" in spec["components"]["schemas"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    undeclared = [
        (path, method, status)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        for status, answer in op["responses"].items()
        if status[0] in "45"
        and answer.get("content", {}).get("application/json", {}).get("schema")
        != {"$ref": "#/components/schemas/ErrorResponse"}
    ]
    assert undeclared == []
