"""A job on one page of a document that is split when whole, run for real on the
two-role deployment (tests/jobs/conftest.py): the page alone fits Gemma's 2,048
tokens, so it is one request there, and the answer cites the document's own page
number (6, not 1), held to that page. Kept tiny: one page, a few output tokens."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import auth
from tests.jobs.conftest import LONG_PDF, Deployment, upload, wait_job

pytestmark = pytest.mark.usefixtures("job_worker")


def test_one_page_of_a_long_document_runs_alone_and_cites_its_real_number(
    client: Any, api_key: str, deployment: Deployment
) -> None:
    doc = upload(client, api_key, LONG_PDF)
    body = {
        "document_id": doc,
        "task": "ask",
        "params": {"questions": ["What does this page explain?"]},
        "max_output_tokens": 48,
    }
    whole = client.post("/v1/jobs", headers=auth(api_key), json=body)
    try:
        assert whole.status_code == 202 and whole.json()["plan"]["kind"] == "map_reduce"
    finally:
        client.post(f"/v1/jobs/{whole.json()['id']}/cancel", headers=auth(api_key))
    r = client.post("/v1/jobs", headers=auth(api_key), json={**body, "pages": "6"})
    assert r.status_code == 202, r.text
    plan = r.json()["plan"]
    assert plan["kind"] == "single" and plan["request"]["role"] == "gemma", plan
    done = wait_job(client, api_key, r.json()["id"])
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    assert done["pages"] == "6"
    result = client.get(f"/v1/jobs/{r.json()['id']}/result", headers=auth(api_key)).json()
    # The server saw no more than the plan counted for the one page and its prompt.
    assert 0 < result["prompt_tokens"] <= plan["request"]["input_tokens"]
    for answer in result["data"]["answers"]:
        assert set(answer["pages"]) <= {6}, answer
