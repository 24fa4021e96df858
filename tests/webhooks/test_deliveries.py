"""Signed webhook deliveries end to end: the real API (in process), a real Celery
worker, Postgres, Redis, and a real HTTP receiver on 127.0.0.1. Every request the
receiver gets is verified with the official `standardwebhooks` package.

No vLLM: a job with no backend to run on fails (`no_backend`) as soon as its
document is parsed, and a job on a document not parsed yet can be cancelled."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from service.config import Settings
from service.db import get_sessionmaker
from service.keys import create_key
from service.webhooks.delivery import Claimed, post
from service.webhooks.signing import generate_secret
from tests.conftest import api_settings, auth
from tests.webhooks.conftest import (
    Client,
    Workers,
    batch_announced,
    deliveries,
    make_job,
    parsed_note,
    register_endpoint,
    settled,
    upload_note,
    verified,
)
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.usefixtures("workers")


def _failed_job(client: Client, key: str, **extra: Any) -> dict[str, Any]:
    job = make_job(client, key, parsed_note(client, key), **extra)
    assert job["status"] == "failed" and job["error"]["code"] == "no_backend", job
    return job


def test_a_failed_job_is_announced_signed_to_its_endpoint_and_callback(
    client: Client, key: str, receiver: Receiver
) -> None:
    path, cb = f"/ep/{uuid.uuid4().hex}", f"/cb/{uuid.uuid4().hex}"
    secret = register_endpoint(client, key, receiver.url(path))["secret"]
    job = _failed_job(client, key, callback_url=receiver.url(cb))
    assert job["callback_url"] == receiver.url(cb)
    rows = settled(job["id"], n=2)
    assert {d.status for d in rows} == {"succeeded"}
    for where in (path, cb):
        (got,) = receiver.at(where)
        event = verified(secret, got)
        assert event["type"] == "job.failed"
        assert event["data"] == {"id": job["id"], "object": "job", "status": "failed"}
        assert got.headers["webhook-id"] in {d.id for d in rows}
        with pytest.raises(WebhookVerificationError):
            Webhook(register_endpoint(client, key, receiver.url("/x"))["secret"]).verify(
                got.body, got.headers
            )
    shown = client.get(f"/v1/jobs/{job['id']}", headers=auth(key)).json()["webhooks"]
    assert sorted((w["status"], w["attempts"], w["last_status_code"]) for w in shown) == [
        ("succeeded", 1, 200),
        ("succeeded", 1, 200),
    ]


def test_after_a_rotation_both_secrets_verify_until_the_old_one_is_removed(
    client: Client, key: str, receiver: Receiver
) -> None:
    path = f"/rot/{uuid.uuid4().hex}"
    created = register_endpoint(client, key, receiver.url(path))
    old = created["secret"]
    r = client.post(f"/v1/webhooks/endpoints/{created['id']}/rotate", headers=auth(key))
    assert r.status_code == 200, r.text
    new = r.json()["secret"]
    assert new != old and r.json()["secrets"] == 2
    doc_id = parsed_note(client, key)
    first = make_job(client, key, doc_id)
    settled(first["id"])
    (got,) = receiver.at(path)
    assert verified(old, got) == verified(new, got)

    r = client.delete(f"/v1/webhooks/endpoints/{created['id']}/secrets/old", headers=auth(key))
    assert r.status_code == 200 and r.json()["secrets"] == 1, r.text
    second = make_job(client, key, doc_id, params={"focus": "again"})
    settled(second["id"])
    later = receiver.at(path)[1]
    assert verified(new, later)["data"]["id"] == second["id"]
    with pytest.raises(WebhookVerificationError):
        verified(old, later)


def test_a_500_is_retried_and_delivered_once(client: Client, key: str, receiver: Receiver) -> None:
    path = f"/flaky/{uuid.uuid4().hex}"
    receiver.script(path, (500, {}))
    secret = register_endpoint(client, key, receiver.url(path))["secret"]
    job = _failed_job(client, key)
    (row,) = settled(job["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 2, 200)
    tries = receiver.at(path)
    assert len(tries) == 2
    assert tries[0].headers["webhook-id"] == tries[1].headers["webhook-id"] == row.id
    assert [verified(secret, t)["type"] for t in tries] == ["job.failed", "job.failed"]


def test_retry_after_is_honoured(client: Client, key: str, receiver: Receiver) -> None:
    path = f"/busy/{uuid.uuid4().hex}"
    receiver.script(path, (429, {"Retry-After": "1"}))
    register_endpoint(client, key, receiver.url(path))
    job = _failed_job(client, key)
    (row,) = settled(job["id"])
    assert row.status == "succeeded"
    first, second = receiver.at(path)
    # The backoff alone is 0.2 s here: only the receiver's Retry-After makes it 1 s.
    assert second.at - first.at >= 1.0


def test_410_disables_the_endpoint(client: Client, key: str, receiver: Receiver) -> None:
    path = f"/gone/{uuid.uuid4().hex}"
    receiver.script(path, (410, {}))
    endpoint = register_endpoint(client, key, receiver.url(path))
    doc_id = parsed_note(client, key)
    job = make_job(client, key, doc_id)
    (row,) = settled(job["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("disabled", 1, 410)
    (listed,) = client.get("/v1/webhooks/endpoints", headers=auth(key)).json()["items"]
    assert listed["id"] == endpoint["id"] and listed["enabled"] is False
    assert "410" in listed["disabled_reason"]
    again = make_job(client, key, doc_id, params={"focus": "again"})
    assert again["status"] == "failed" and deliveries(again["id"]) == []
    assert len(receiver.at(path)) == 1


def test_a_redirect_is_not_followed(client: Client, key: str, receiver: Receiver) -> None:
    path, target = f"/moved/{uuid.uuid4().hex}", f"/target/{uuid.uuid4().hex}"
    receiver.script(path, *[(302, {"Location": receiver.url(target)})] * 3)
    register_endpoint(client, key, receiver.url(path))
    job = _failed_job(client, key)
    (row,) = settled(job["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 3, 302)
    assert "redirect" in (row.last_error or "")
    assert len(receiver.at(path)) == 3 and receiver.at(target) == []


def test_a_private_address_is_refused_when_not_allowed(
    client: Client, key: str, settings: Settings
) -> None:
    strict = settings.model_copy(update={"webhook_allow_private": False})
    with api_settings(strict):
        r = client.post(
            "/v1/webhooks/endpoints", headers=auth(key), json={"url": "http://127.0.0.1:9/x"}
        )
        assert r.status_code == 422, r.text
        assert "loopback" in json.dumps(r.json())
        body = {
            "document_id": str(uuid.uuid4()),
            "task": "summarize",
            "callback_url": "http://10.0.0.7/hook",
        }
        r = client.post("/v1/jobs", headers=auth(key), json=body)
        assert r.status_code == 422, r.text
        assert "callback_private_address" in r.text and "private" in r.text


def test_a_cancelled_job_is_delivered_by_a_worker_started_after_it(
    client: Client, key: str, receiver: Receiver, workers: Workers
) -> None:
    path = f"/restart/{uuid.uuid4().hex}"
    secret = register_endpoint(client, key, receiver.url(path))["secret"]
    workers.stop()
    try:
        job = make_job(client, key, upload_note(client, key))  # not parsed: nothing runs it
        assert job["status"] == "queued", job
        r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(key))
        assert r.status_code in (200, 202), r.text
        (row,) = deliveries(job["id"])
        assert (row.status, row.event_type, row.attempts) == ("pending", "job.cancelled", 0)
    finally:
        workers.start()
    (row,) = settled(job["id"])
    assert row.status == "succeeded"
    (got,) = receiver.at(path)
    event = verified(secret, got)
    assert event["type"] == "job.cancelled"
    assert event["data"] == {"id": job["id"], "object": "job", "status": "cancelled"}


def test_a_batch_that_ends_is_announced_and_its_jobs_are_not(
    client: Client, key: str, receiver: Receiver
) -> None:
    path, cb = f"/batch/{uuid.uuid4().hex}", f"/batch-cb/{uuid.uuid4().hex}"
    files = _one_entry_zip()
    params = {"task": "summarize", "max_output_tokens": 16, "callback_url": receiver.url(cb)}
    # A callback is signed with an endpoint's secret: none yet, so it is refused first.
    r = client.post("/v1/batches/archive", headers=auth(key), params=params, files=files)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_webhook_secret", r.text
    assert r.json()["error"]["field"] == "query.callback_url"
    secret = register_endpoint(client, key, receiver.url(path))["secret"]
    r = client.post("/v1/batches/archive", headers=auth(key), params=params, files=files)
    assert r.status_code in (200, 202), r.text
    batch_id = r.json()["id"]
    assert r.json()["callback_url"] == receiver.url(cb)

    batch = batch_announced(client, key, batch_id)
    assert batch["status"] in ("completed", "failed"), batch
    assert len(batch["webhooks"]) == 2  # the endpoint's and the callback's
    for where in (path, cb):
        (got,) = receiver.at(where)  # the batch's event; its job's end is not announced
        event = verified(secret, got)
        assert event["type"] == f"batch.{batch['status']}"
        assert event["data"] == {"id": batch_id, "object": "batch", "status": batch["status"]}


def _one_entry_zip() -> dict[str, Any]:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", f"One entry of a batch, {uuid.uuid4().hex}.\n")
    return {"file": ("one.zip", archive.getvalue(), "application/octet-stream")}


def test_a_request_file_batch_takes_a_callback_only_with_an_endpoint(
    client: Client, key: str, receiver: Receiver
) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/jobs", "body": {}}
    up = {"file": ("r.jsonl", json.dumps(line).encode() + b"\n")}
    r = client.post("/v1/files", headers=auth(key), data={"purpose": "batch"}, files=up)
    assert r.status_code == 200, r.text
    body = {"input_file_id": r.json()["id"], "endpoint": "/v1/jobs", "callback_url": "x"}
    r = client.post("/v1/batches", headers=auth(key), json=body)
    assert r.status_code == 422 and r.json()["error"]["field"] == "body.callback_url", r.text
    body["callback_url"] = receiver.url(f"/rf/{uuid.uuid4().hex}")
    r = client.post("/v1/batches", headers=auth(key), json=body)
    assert r.json()["error"]["code"] == "no_webhook_secret", r.text
    register_endpoint(client, key, receiver.url("/rf-endpoint"))
    r = client.post("/v1/batches", headers=auth(key), json=body)
    assert r.status_code == 202 and r.json()["callback_url"] == body["callback_url"], r.text


def test_a_private_address_is_refused_again_at_send_time_for_good(
    receiver: Receiver, settings: Settings
) -> None:
    """An endpoint registered while private addresses were allowed (or a name that
    resolves elsewhere now) is checked at each attempt; the refusal is final."""
    strict = settings.model_copy(update={"webhook_allow_private": False})
    path = f"/late/{uuid.uuid4().hex}"
    claimed = Claimed("msg_test", receiver.url(path), b"{}", [generate_secret()], None, 0)
    outcome = post(strict, claimed)
    assert outcome.final and outcome.status_code is None
    assert "callback_private_address" in (outcome.error or "")
    assert receiver.at(path) == []
    assert post(settings, claimed).status_code == 200  # the same, allowed: delivered
    assert len(receiver.at(path)) == 1


def test_endpoints_are_the_tenants_own_and_removing_one_stops_its_deliveries(
    client: Client, key: str, receiver: Receiver, workers: Workers
) -> None:
    with get_sessionmaker()() as s:
        other = create_key(s, f"hooks-other-{uuid.uuid4().hex[:8]}")
    path = f"/removed/{uuid.uuid4().hex}"
    endpoint = register_endpoint(client, key, receiver.url(path))
    for method, suffix in (("post", "/rotate"), ("delete", ""), ("delete", "/secrets/old")):
        r = client.request(
            method.upper(), f"/v1/webhooks/endpoints/{endpoint['id']}{suffix}", headers=auth(other)
        )
        assert r.status_code == 404, (method, suffix, r.text)
    assert client.get("/v1/webhooks/endpoints", headers=auth(other)).json()["items"] == []
    r = client.post(
        "/v1/webhooks/endpoints", headers=auth(key), json={"url": receiver.url(path), "secret": "x"}
    )
    assert r.status_code == 422 and "whsec_" in r.text, r.text

    workers.stop()
    try:
        job = make_job(client, key, upload_note(client, key))
        client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(key))
        (row,) = deliveries(job["id"])
        assert row.status == "pending"
        r = client.delete(f"/v1/webhooks/endpoints/{endpoint['id']}", headers=auth(key))
        assert r.status_code == 204, r.text
        (row,) = deliveries(job["id"])
        assert row.status == "disabled" and "removed" in (row.last_error or "")
    finally:
        workers.start()
    assert client.get("/v1/webhooks/endpoints", headers=auth(key)).json()["items"] == []
