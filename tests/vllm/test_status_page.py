"""A real job from upload to result on the status page, in Debian's chromium: the
tenant's page follows it through its states to `succeeded` with its request done, the
operator's shows it on the replica that ran it, and the API's /metrics counts it. On
the session's SmolLM2 server in the gemma role (a one-line note, 16 output tokens).
The last page is kept as a screenshot (`tests.browser.artifacts`)."""

from __future__ import annotations

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
from service.models import Backend, Job
from tests.api.conftest import base, live_server  # noqa: F401 - fixtures
from tests.browser import artifacts, chromium  # noqa: F401 - chromium: a fixture
from tests.conftest import auth, wait_for
from tests.vllm.conftest import smollm2_job_settings
from tests.webhooks.conftest import key, make_job, parsed_note, workers  # noqa: F401

pytestmark = pytest.mark.usefixtures("workers")
ORDER = ["queued", "waiting_for_capacity", "running", "succeeded"]


@pytest.fixture(scope="module")
def settings(database: str, broker: Any, smollm2_server: VllmServer) -> Iterator[Settings]:
    """For the API and, as its environment, the module's worker (`workers`)."""
    with smollm2_job_settings(smollm2_server) as s:
        yield s


def _succeeded(base: str, admin_key: str) -> float:  # noqa: F811 - base: the fixture's value
    text = httpx.get(f"{base}/metrics", headers=auth(admin_key), timeout=30).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return next(
        s.value for s in families["longdoc_jobs"].samples if s.labels["status"] == "succeeded"
    )


def _signed_in(browser: Any, base: str, api_key: str) -> Any:  # noqa: F811
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(f"{base}/status?refresh=0")
    page.fill("#key", api_key)
    with page.expect_navigation():
        page.click("button[type=submit]")
    return page


def test_a_job_from_upload_to_result_on_the_status_page(
    api: Any,
    base: str,  # noqa: F811
    chromium: Any,  # noqa: F811
    settings: Settings,
    admin_key: str,
    key: str,  # noqa: F811
) -> None:
    before = _succeeded(base, admin_key)
    page = _signed_in(chromium, base, key)
    job = make_job(api, key, parsed_note(api, key))
    row = f"#jobs tr[data-job='{job['id']}']"
    seen: list[str] = []

    def final_on_page() -> str | None:
        page.goto(f"{base}/status?refresh=0")
        el = page.query_selector(row)
        status = None if el is None else el.get_attribute("data-status")
        if status is not None and (not seen or seen[-1] != status):
            seen.append(status)
        return status if status in ("succeeded", "failed", "cancelled") else None

    assert wait_for(final_on_page, timeout=240, interval=0.3, what="the job to end") == "succeeded"
    # Each state the page showed came after the one before it.
    assert [ORDER.index(s) for s in seen] == sorted(ORDER.index(s) for s in seen), seen
    done = page.query_selector(row)
    assert done.query_selector(".bar").get_attribute("aria-label") == "100%"
    assert "1/1 request" in done.inner_text() and "gemma" in done.inner_text()
    shot = artifacts() / "status-job-succeeded.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.context.close()

    # The operator's page: the job, and the replica it ran on, up and usable.
    with get_sessionmaker()() as s:
        ran_on = s.scalar(select(Job.backend_id).where(Job.id == uuid.UUID(job["id"])))
        url = s.scalar(select(Backend.url).where(Backend.id == ran_on))
    assert url is not None
    admin = _signed_in(chromium, base, admin_key)
    assert admin.query_selector(row).get_attribute("data-status") == "succeeded"
    backends = admin.inner_text("#backends")
    server = next(
        r for r in admin.query_selector_all("#backends tbody tr") if url in r.inner_text()
    )
    assert server.get_attribute("data-state") == "up", backends
    admin.context.close()

    # And the metrics count it: a job in `succeeded` that was not there before.
    wait_for(lambda: _succeeded(base, admin_key) >= before + 1, timeout=30, what="the count")
