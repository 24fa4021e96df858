"""What the webhook tests share: settings that let deliveries reach a receiver on
127.0.0.1 quickly, the module's worker (which a test may stop and replace), the
receiver, a tenant per test, and the helpers that make a job end and read its
deliveries back. A module overrides `settings` for other parts (a vLLM backend)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from service.config import Settings, as_environment, get_settings
from service.db import get_sessionmaker
from service.keys import create_key
from service.models import WebhookDelivery
from tests.conftest import api_settings, auth, start_worker, stop_worker, wait_for
from tests.webhooks.receiver import Receiver, start_receiver

Client = Any
WAIT_S = 90.0


def webhook_settings(**update: Any) -> Settings:
    """The process's settings with quick deliveries to a private receiver, and `update`."""
    return get_settings().model_copy(
        update={
            "webhook_allow_private": True,  # the receiver is on 127.0.0.1
            "webhook_poll_interval_s": 0.2,
            "webhook_backoff_s": 0.2,
            "webhook_max_attempts": 3,
            "webhook_timeout_s": 5.0,
            **update,
        }
    )


class Workers:
    """The module's worker, which a test may stop and replace."""

    def __init__(self, logs: Path, settings: Settings) -> None:
        self.logs, self.env = logs, as_environment(settings)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.proc is None:
            self.proc = start_worker(self.logs / f"worker-{uuid.uuid4().hex[:6]}.log", env=self.env)

    def stop(self) -> None:
        if self.proc is not None:
            stop_worker(self.proc)
            self.proc = None


@pytest.fixture(scope="module")
def settings(database: str, broker: Any) -> Iterator[Settings]:
    with api_settings(webhook_settings()) as s:
        yield s


@pytest.fixture(scope="module")
def workers(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    w = Workers(tmp_path_factory.mktemp("webhooks"), settings)
    w.start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = start_receiver()
    yield r
    r.server.shutdown()


@pytest.fixture
def key(database: str) -> str:
    """A tenant of its own per test: endpoints receive every event of their tenant."""
    with get_sessionmaker()() as s:
        return create_key(s, f"hooks-{uuid.uuid4().hex[:8]}")


def register_endpoint(client: Client, key: str, url: str) -> dict[str, Any]:
    r = client.post("/v1/webhooks/endpoints", headers=auth(key), json={"url": url})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["secret"].startswith("whsec_")
    return body


def upload_note(client: Client, key: str) -> str:
    text = f"A note for the webhook tests, {uuid.uuid4().hex}.\n".encode()
    r = client.post("/v1/documents", headers=auth(key), files={"file": ("n.txt", text)})
    assert r.status_code in (200, 202), r.text
    return str(r.json()["id"])


def parsed_note(client: Client, key: str) -> str:
    doc_id = upload_note(client, key)

    def done() -> str | None:
        status = client.get(f"/v1/documents/{doc_id}", headers=auth(key)).json()["status"]
        return status if status in ("parsed", "failed") else None

    assert wait_for(done, timeout=WAIT_S, what="the note to parse") == "parsed"
    return doc_id


def make_job(client: Client, key: str, doc_id: str, **extra: Any) -> dict[str, Any]:
    body = {"document_id": doc_id, "task": "summarize", "max_output_tokens": 16, **extra}
    r = client.post("/v1/jobs", headers=auth(key), json=body)
    assert r.status_code in (200, 202), r.text
    job: dict[str, Any] = r.json()
    return job


def deliveries(job_id: str) -> list[WebhookDelivery]:
    with get_sessionmaker()() as s:
        stmt = select(WebhookDelivery).where(WebhookDelivery.job_id == uuid.UUID(job_id))
        return list(s.scalars(stmt))


def settled(job_id: str, n: int = 1, timeout: float = WAIT_S) -> list[WebhookDelivery]:
    """The job's `n` deliveries once none is pending any more."""

    def done() -> list[WebhookDelivery] | None:
        rows = deliveries(job_id)
        return rows if len(rows) == n and all(d.status != "pending" for d in rows) else None

    return wait_for(done, timeout=timeout, what=f"job {job_id}'s deliveries to settle")


def batch_announced(client: Client, key: str, batch_id: str) -> dict[str, Any]:
    """The batch (`GET /v1/batches/{id}`) once its final event has been delivered to
    each of its receivers."""

    def done() -> dict[str, Any] | None:
        out: dict[str, Any] = client.get(f"/v1/batches/{batch_id}", headers=auth(key)).json()
        sent = out["webhooks"] and all(w["status"] == "succeeded" for w in out["webhooks"])
        return out if sent else None

    return wait_for(done, timeout=WAIT_S, what=f"batch {batch_id}'s event delivered")


def verified(secret: str, got: Any) -> dict[str, Any]:
    """The event a received request carries, checked by the official library."""
    body: dict[str, Any] = Webhook(secret).verify(got.body, got.headers)
    return body
