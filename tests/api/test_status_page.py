"""`/status` in a real headless browser (Debian's chromium, through Playwright): the
sign-in form, what a tenant sees (their own work only, their own share of each KV
pool, no server URLs), what an operator sees (everyone's, the URLs, the broker),
other people's text escaped, and the cookie kept to the page. Screenshots are kept
(`tests.browser.artifacts`).

No worker runs here: the jobs stay queued, the documents unparsed; a job run through
to its result is tests/vllm/test_status_page.py's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from service.backends.mismatch import reason
from service.db import get_sessionmaker, write_transaction
from service.keys import authenticate
from service.models import Backend, Job, JobStatus, KvLease, utcnow
from tests.api.conftest import base, live_server  # noqa: F401 - fixtures
from tests.browser import artifacts, chromium  # noqa: F401 - chromium: a fixture
from tests.conftest import auth, corpus_file

PDF = "pdf/us-va-form-21-0966.pdf"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><b>bold</b>"
GIB = 1024**3


def _job(base: str, key: str, name: str) -> str:  # noqa: F811 - base: the fixture's value
    with httpx.Client(base_url=base, headers=auth(key), timeout=30) as c:
        data = corpus_file(PDF).read_bytes() + f"\n% {uuid.uuid4().hex}\n".encode()
        doc = c.post("/v1/documents", files={"file": (name, data, "application/pdf")})
        assert doc.status_code in (200, 202), doc.text
        body = {"document_id": doc.json()["id"], "task": "summarize", "max_output_tokens": 16}
        job = c.post("/v1/jobs", json=body)
        assert job.status_code in (200, 202), job.text
        return str(job.json()["id"])


@pytest.fixture(scope="module")
def work(base: str, api_key: str, other_key: str) -> Iterator[dict[str, Any]]:  # noqa: F811
    """Tenant A's job (holding a quarter of a backend's pool) and a failed job whose
    reason is markup; tenant B's job. The backend row and the failure are written as
    the refresher and a worker would write them."""
    ours, theirs = _job(base, api_key, "ours.pdf"), _job(base, other_key, "theirs.pdf")
    with get_sessionmaker()() as s, write_transaction(s):
        tenant = authenticate(s, api_key)
        assert tenant is not None
        backend = Backend(
            role="gemma",
            url=f"http://status-{uuid.uuid4().hex[:8]}.invalid:8000",
            model="google/gemma-4-31B-it",
            max_model_len=262_144,
            kv_capacity_bytes=4 * GIB,
            healthy=True,
        )
        failed = Job(
            tenant_id=tenant.tenant_id,
            task="summarize",
            max_output_tokens=16,
            idempotency_key=uuid.uuid4().hex,
            status=JobStatus.failed,
            error_code="hostile_reason",
            error_reason=HOSTILE,
            finished_at=utcnow(),
        )
        # Up, but serving another model than configured: as discovery writes it.
        found = {"model": {"expected": "google/gemma-4-31B-it", "reported": "other/model-7b"}}
        mismatched = Backend(
            role="gemma",
            url=f"http://status-{uuid.uuid4().hex[:8]}.invalid:8000",
            model="other/model-7b",
            max_model_len=32_768,
            kv_capacity_bytes=GIB,
            healthy=False,
            mismatches=found,
            last_error=reason(found),
        )
        s.add_all([backend, mismatched, failed])
        s.flush()
        s.add(
            KvLease(
                job_id=uuid.UUID(ours),
                backend_id=backend.id,
                kv_bytes=GIB,
                kv_blocks=1,
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
        backend_id = backend.id
        ids = {"ours": ours, "theirs": theirs, "failed": str(failed.id), "url": backend.url}
        ids["backend"] = str(backend_id)
        ids["mismatched"] = str(mismatched.id)
    yield ids
    with get_sessionmaker()() as s, write_transaction(s):
        s.delete(s.get(Backend, backend_id))  # its lease goes with it
        s.delete(s.get(Backend, uuid.UUID(ids["mismatched"])))


def _sign_in(browser: Any, base: str, key: str) -> tuple[Any, Any]:  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    first = page.goto(f"{base}/status?refresh=0")
    assert first is not None and first.status == 401
    page.fill("#key", key)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == f"{base}/status", page.url
    return context, page


def _rows(page: Any, attr: str) -> set[str]:
    return {el.get_attribute(attr) for el in page.query_selector_all(f"[{attr}]")}


def test_a_wrong_key_gets_the_form_again(chromium: Any, base: str) -> None:  # noqa: F811
    page = chromium.new_context().new_page()
    assert page.goto(f"{base}/status").status == 401
    page.fill("#key", "ld_not-a-key")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    assert page.context.cookies() == []
    page.context.close()


def test_a_tenant_sees_only_their_own_work(
    chromium: Any,  # noqa: F811
    base: str,  # noqa: F811
    api_key: str,
    work: dict[str, Any],
) -> None:
    context, page = _sign_in(chromium, base, api_key)
    assert page.get_attribute("[data-viewer]", "data-viewer") == "tenant"
    jobs = _rows(page, "data-job")
    assert work["ours"] in jobs and work["failed"] in jobs
    assert work["theirs"] not in jobs
    assert "ours.pdf" in page.inner_text("#jobs") and "theirs.pdf" not in page.inner_text("main")

    # The backend by role and model, its pool and this tenant's quarter of it; no URL.
    row = page.query_selector(f"#backends tr[data-backend='{work['backend']}'][data-state=up]")
    assert row is not None, page.inner_text("#backends")
    assert "google/gemma-4-31B-it" in row.inner_text() and "262,144" in row.inner_text()
    assert row.query_selector(".bar").get_attribute("aria-label") == "25%"
    assert "4.0 GiB" in row.inner_text() and "1.0 GiB" in row.inner_text()
    assert work["url"] not in page.content()
    # A mismatched server: its state, not why (the operators' business).
    odd = page.query_selector(f"#backends tr[data-backend='{work['mismatched']}']")
    assert odd is not None and odd.get_attribute("data-state") == "up, mismatched"
    assert "expected" not in odd.inner_text() and "unexpected" not in odd.inner_text()

    # The failure's reason is shown as the text it is, not run as markup.
    failure = page.query_selector(f"[data-failure='{work['failed']}']")
    assert failure is not None and HOSTILE in failure.inner_text()
    assert failure.query_selector("img, b") is None and page.title() == "Longdoc status"

    # Queued work of this tenant only: two jobs not routed yet (no worker parses here).
    routing = page.query_selector("#queues tr[data-role=routing]")
    assert routing is not None and routing.query_selector_all("td")[1].inner_text() == "1"

    cookie = next(c for c in context.cookies() if c["name"] == "longdoc_status_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/status"
    shot = artifacts() / "status-tenant.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    with page.expect_navigation():
        page.click("header button[type=submit]")  # sign out
    assert page.query_selector("#key") is not None and context.cookies() == []
    context.close()


def test_an_operator_sees_everything(
    chromium: Any,  # noqa: F811
    base: str,  # noqa: F811
    admin_key: str,
    work: dict[str, Any],
) -> None:
    context, page = _sign_in(chromium, base, admin_key)
    assert page.get_attribute("[data-viewer]", "data-viewer") == "operator"
    assert {work["ours"], work["theirs"], work["failed"]} <= _rows(page, "data-job")
    assert work["url"] in page.inner_text("#backends")
    odd = page.query_selector(f"#backends tr[data-backend='{work['mismatched']}']")
    assert odd is not None and odd.get_attribute("data-state") == "up, mismatched"
    text = odd.inner_text()
    assert "model: expected google/gemma-4-31B-it, reported other/model-7b" in text, text
    assert {"ingest", "jobs", "ocr"} <= _rows(page, "data-queue")  # the broker answered
    shot = artifacts() / "status-operator.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    context.close()


def test_a_key_header_gets_the_page_without_a_cookie(base: str, api_key: str) -> None:  # noqa: F811
    r = httpx.get(f"{base}/status", headers=auth(api_key), params={"refresh": 0}, timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src" not in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert 'http-equiv="refresh"' not in r.text
    again = httpx.get(f"{base}/status", headers=auth(api_key), timeout=30)
    assert 'http-equiv="refresh" content="10"' in again.text
    bad = httpx.get(f"{base}/status", headers=auth(api_key), params={"refresh": -1}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "query.refresh"
    wrong = httpx.get(f"{base}/status", headers=auth("ld_nope"), timeout=30)
    assert wrong.status_code == 401 and "not valid" in wrong.text
