"""A real job from upload to result, seen in the metrics: the worker's port counts its
parse, admission wait, vLLM call, tokens and webhook delivery (summed over the pool's
files), and the API's /metrics counts it succeeded. On the session's SmolLM2 server in
the gemma role, a one-line note and 16 output tokens: the CPU is slow."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from service.backends.server import VllmServer
from service.config import Settings
from service.db import get_sessionmaker
from service.models import Job
from tests.conftest import auth, wait_for
from tests.jobs.conftest import wait_job
from tests.vllm.conftest import smollm2_job_settings
from tests.webhooks.conftest import (  # noqa: F401 - key, receiver, workers: fixtures
    key,
    make_job,
    parsed_note,
    receiver,
    register_endpoint,
    settled,
    workers,
)
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.usefixtures("workers")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def settings(database: str, broker: Any, smollm2_server: VllmServer) -> Iterator[Settings]:
    """For the API and, as its environment, the module's worker (`workers`)."""
    with smollm2_job_settings(smollm2_server, worker_metrics_port=_free_port()) as s:
        yield s


def totals(text: str) -> dict[str, float]:
    """Each sample name's value summed over its labels."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def test_a_job_from_upload_to_result_shows_in_the_metrics(
    api: Any,
    settings: Settings,
    admin_key: str,
    key: str,  # noqa: F811 - the fixture imported above
    receiver: Receiver,  # noqa: F811
) -> None:
    register_endpoint(api, key, receiver.url(f"/m/{uuid.uuid4().hex}"))
    job = make_job(api, key, parsed_note(api, key))
    assert wait_job(api, key, job["id"])["status"] == "succeeded"
    assert settled(job["id"])[0].status == "succeeded"
    result = api.get(f"/v1/jobs/{job['id']}/result", headers=auth(key)).json()

    url = f"http://127.0.0.1:{settings.worker_metrics_port}/metrics"
    seen = totals(httpx.get(url, timeout=10).raise_for_status().text)
    assert seen["longdoc_parse_pages_total"] >= 1
    assert seen["longdoc_admission_wait_seconds_count"] >= 1
    assert seen["longdoc_inference_seconds_count"] >= 1
    assert seen["longdoc_prompt_tokens_total"] >= result["prompt_tokens"] > 0
    assert seen["longdoc_completion_tokens_total"] >= result["completion_tokens"] > 0

    def delivered() -> bool:  # counted after the row's commit, read just before
        text = httpx.get(url, timeout=10).text
        return 'longdoc_webhook_deliveries_total{outcome="succeeded"}' in text

    wait_for(delivered, timeout=30, what="the delivery counted")

    state = api.get("/metrics", headers=auth(admin_key))
    assert state.status_code == 200, state.text
    families = {f.name: f for f in text_string_to_metric_families(state.text)}
    succeeded = [s for s in families["longdoc_jobs"].samples if s.labels["status"] == "succeeded"]
    assert succeeded[0].value >= 1
    # The replica the job ran on (the suite's database keeps other tests' backends,
    # servers long stopped among them, which rightly show down).
    with get_sessionmaker()() as s:
        ran_on = s.scalar(select(Job.backend_id).where(Job.id == uuid.UUID(job["id"])))
    assert ran_on is not None
    for name in ("longdoc_backend_up", "longdoc_backend_usable"):
        mine = [s for s in families[name].samples if s.labels["backend"] == str(ran_on)]
        assert [(s.labels["role"], s.value) for s in mine] == [("gemma", 1.0)], name
