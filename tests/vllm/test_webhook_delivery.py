"""A job that runs and succeeds on a real vLLM CPU server (the session's SmolLM2 135M,
in the gemma role, counted by its own /tokenize) is announced `job.succeeded`, signed,
to the tenant's endpoint and to the job's callback URL, with where its result is read;
each request the receiver gets is verified with the official `standardwebhooks`
package, and the result is read back from that reference. The API in process, a real
Celery worker, Postgres, Redis, and tests/webhooks' receiver and helpers. A one-line
note and 16 output tokens: the CPU is slow."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from service.backends.server import VllmServer
from service.config import Settings
from tests.conftest import auth
from tests.jobs.conftest import wait_job
from tests.vllm.conftest import smollm2_job_settings
from tests.webhooks.conftest import (  # noqa: F401 - key, receiver, workers: fixtures
    key,
    make_job,
    parsed_note,
    receiver,
    register_endpoint,
    settled,
    verified,
    workers,
)
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture(scope="module")
def settings(database: str, broker: Any, smollm2_server: VllmServer) -> Iterator[Settings]:
    """For the API and, as its environment, the module's worker (`workers`)."""
    with smollm2_job_settings(smollm2_server) as s:
        yield s


def test_a_job_that_succeeds_on_vllm_is_announced_signed_with_its_result_reference(
    api: Any,
    key: str,  # noqa: F811 - the fixture imported above
    receiver: Receiver,  # noqa: F811
) -> None:
    path, cb = f"/ok/{uuid.uuid4().hex}", f"/ok-cb/{uuid.uuid4().hex}"
    secret = register_endpoint(api, key, receiver.url(path))["secret"]
    job = make_job(api, key, parsed_note(api, key), callback_url=receiver.url(cb))
    done = wait_job(api, key, job["id"])
    assert done["status"] == "succeeded", done
    rows = settled(job["id"], n=2)
    assert {(d.status, d.event_type) for d in rows} == {("succeeded", "job.succeeded")}
    for where in (path, cb):
        (got,) = receiver.at(where)
        assert got.headers["webhook-id"] in {d.id for d in rows}
        event = verified(secret, got)
        assert event["type"] == "job.succeeded"
        assert event["data"] == {
            "id": job["id"],
            "object": "job",
            "status": "succeeded",
            "result_url": f"/v1/jobs/{job['id']}/result",
        }
    # The reference is where the result is read, with the tenant's own key.
    result = api.get(event["data"]["result_url"], headers=auth(key))
    assert result.status_code == 200, result.text
    assert result.json()["job_id"] == job["id"] and result.json()["text"]
