"""Jobs end to end on the real two-role deployment (tests/jobs/conftest.py): the
router's choice, each task's result from a real vLLM server, idempotency, cancel,
and every kind of bad input. Nothing is mocked.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from typing import Any

import jsonschema
import pytest
from sqlalchemy import func, or_, select

from ingestion.tasks.repetition import find_loop
from service.db import get_sessionmaker
from service.models import Job, KvLease, Result
from service.queue import app
from tests.conftest import api_settings, auth, wait_for
from tests.jobs.conftest import (
    LONG_PDF,
    MEDIUM_PDF,
    SMALL_PDF,
    Deployment,
    corpus_pdf,
    running_requests,
    upload,
    wait_job,
)

pytestmark = pytest.mark.usefixtures("job_worker")
Client = Any


def _post(client: Client, key: str, body: dict[str, Any]) -> Any:
    return client.post("/v1/jobs", headers=auth(key), json=body)


def _succeeded(client: Client, key: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Create the job, wait for it, and require that it succeeded."""
    r = _post(client, key, body)
    assert r.status_code == 202, r.text
    job_id: str = r.json()["id"]
    done = wait_job(client, key, job_id)
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    return job_id, done


def _result(client: Client, key: str, job_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/jobs/{job_id}/result", headers=auth(key))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _rows(model: Any, **where: Any) -> int:
    with get_sessionmaker()() as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.scalar(stmt) or 0)


@pytest.fixture(scope="module")
def small(client: Client, api_key: str, deployment: Deployment) -> str:
    return upload(client, api_key, SMALL_PDF)


def test_summary_of_a_one_page_pdf_runs_on_gemma(client: Client, api_key: str, small: str) -> None:
    r = _post(client, api_key, {"document_id": small, "task": "summarize", "max_output_tokens": 48})
    assert r.status_code == 202, r.text
    job = r.json()
    plan = job["plan"]
    assert plan["kind"] == "single" and plan["request"]["role"] == "gemma"
    assert plan["request"]["output_tokens"] == 48
    assert plan["request"]["kv_bytes"] > 0 and plan["reasons"]
    done = wait_job(client, api_key, job["id"])
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    assert done["backend"]["role"] == "gemma" and done["attempts"] == 1
    t = done["timings"]
    assert t["total_s"] > 0 and t["prefill_s"] is not None and t["kv_wait_s"] is not None
    res = _result(client, api_key, job["id"])
    assert res["text"].strip()
    assert res["model"] == "google/gemma-3-270m"
    # Usage from the server: the prompt is the page plus the task prompt, within the plan.
    assert 900 < res["prompt_tokens"] <= plan["request"]["input_tokens"]
    assert 0 < res["completion_tokens"] <= 48
    assert res["request_id"].startswith(job["id"])
    assert _rows(Result, job_id=uuid.UUID(job["id"])) == 1
    assert _rows(KvLease, job_id=uuid.UUID(job["id"])) == 0


def test_same_request_returns_the_same_job(client: Client, api_key: str, small: str) -> None:
    # A budget no other test asks for: the summary test's job must be its own (202).
    body = {"document_id": small, "task": "summarize", "max_output_tokens": 40}
    first, again = _post(client, api_key, body), _post(client, api_key, body)
    assert first.status_code == 202, first.text
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    keyed = {**body, "task": "prompt", "params": {"instruction": "List three topics."}}
    keyed["idempotency_key"] = f"k-{uuid.uuid4().hex}"
    a, b = _post(client, api_key, keyed), _post(client, api_key, keyed)
    assert a.status_code == 202 and b.status_code == 200 and a.json()["id"] == b.json()["id"]
    other = _post(client, api_key, {**keyed, "params": {"instruction": "Something else."}})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    wait_job(client, api_key, a.json()["id"])


def test_five_pages_go_to_scout(client: Client, api_key: str, deployment: Deployment) -> None:
    doc = upload(client, api_key, MEDIUM_PDF)
    r = _post(client, api_key, {"document_id": doc, "task": "summarize", "max_output_tokens": 64})
    plan = r.json()["plan"]
    assert plan["kind"] == "single" and plan["request"]["role"] == "scout", plan
    assert [x["role"] for x in plan["rejected"]] == ["gemma"]
    assert "max_model_len 2,048" in plan["rejected"][0]["reason"]
    done = wait_job(client, api_key, r.json()["id"])
    assert done["status"] == "succeeded" and done["backend"]["role"] == "scout"
    assert done["backend"]["url"] is None  # a tenant's key: no server addresses
    assert _result(client, api_key, r.json()["id"])["text"].strip()


def test_a_looping_summary_is_asked_again_with_a_penalty(client: Client, api_key: str) -> None:
    """Greedy SmolLM2 (the scout role here, no sampling configured) says one sentence over
    and over on the style guide. The loop is stopped, the request asked once more with
    the loop-retry penalty, and that answer is the result."""
    doc = upload(client, api_key, MEDIUM_PDF)
    body = {"document_id": doc, "task": "summarize", "max_output_tokens": 200}
    job_id, _ = _succeeded(client, api_key, body)
    res = _result(client, api_key, job_id)
    # Request ids are {job}-{attempt}-{call}-{client attempt}: the second call's won.
    assert res["request_id"].startswith(f"{job_id}-1-1-"), res["request_id"]
    assert find_loop(res["text"] + "\n") is None, res["text"]
    assert not [w for w in res["warnings"] if w.startswith("output_repetition")], res


@pytest.mark.timeout(1200)
def test_long_document_is_split_and_reduced(client: Client, api_key: str) -> None:
    doc = upload(client, api_key, LONG_PDF)
    body = {"document_id": doc, "task": "summarize", "max_output_tokens": 64}
    r = _post(client, api_key, body)
    job = r.json()
    plan = job["plan"]
    assert plan["kind"] == "map_reduce", plan
    assert len(plan["map"]) >= 2 and all(s["request"]["role"] == "scout" for s in plan["map"])
    pages = [(s["chunk"]["first_page"], s["chunk"]["last_page"]) for s in plan["map"]]
    assert pages[0][0] == 1 and pages[-1][1] == 21
    assert all(b[0] in (a[1], a[1] + 1) for a, b in itertools.pairwise(pages))
    done = wait_job(client, api_key, job["id"], timeout=900)
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    n_requests = len(plan["map"]) + sum(len(lv["groups"]) for lv in plan["reduce"])
    assert done["children"] == {
        "total": n_requests,
        "succeeded": n_requests,
        "running": 0,
        "failed": 0,
    }
    with get_sessionmaker()() as s:
        kids = s.scalars(select(Job).where(Job.parent_id == uuid.UUID(job["id"]))).all()
        stages = [k.step.stage if k.step is not None else None for k in kids]
        assert stages.count("map") == len(plan["map"])
        assert all(k.status == "succeeded" and k.attempts == 1 for k in kids)
        # Every request had its own lease; none is left.
        assert (
            s.scalar(
                select(func.count())
                .select_from(KvLease)
                .where(KvLease.job_id.in_([k.id for k in kids]))
            )
            == 0
        )
    res = _result(client, api_key, job["id"])
    assert res["text"].strip() and res["prompt_tokens"] > 8000


def test_extract_follows_the_schema(client: Client, api_key: str, small: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "topics": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["title", "topics"],
        "additionalProperties": False,
    }
    job_id, _ = _succeeded(
        client,
        api_key,
        {
            "document_id": small,
            "task": "extract",
            "params": {"schema": schema},
            "max_output_tokens": 96,
        },
    )
    data = _result(client, api_key, job_id)["data"]
    jsonschema.validate(data, schema)


def test_ask_cites_real_pages(client: Client, api_key: str, deployment: Deployment) -> None:
    doc = upload(client, api_key, MEDIUM_PDF)
    questions = ["What is this document about?", "Who is it written for?"]
    job_id, _ = _succeeded(
        client,
        api_key,
        {
            "document_id": doc,
            "task": "ask",
            "params": {"questions": questions},
            "max_output_tokens": 160,
        },
    )
    answers = _result(client, api_key, job_id)["data"]["answers"]
    assert [a["question"] for a in answers] == questions
    for a in answers:
        assert all(1 <= p <= 5 for p in a["pages"]), a


def test_classify_picks_a_given_label(client: Client, api_key: str, small: str) -> None:
    labels = ["software documentation", "cooking recipe", "legal contract"]
    job_id, _ = _succeeded(
        client,
        api_key,
        {
            "document_id": small,
            "task": "classify",
            "params": {"labels": labels},
            "max_output_tokens": 96,
        },
    )
    res = _result(client, api_key, job_id)
    assert res["data"]["label"] in labels and res["text"] == res["data"]["label"]


def test_upload_and_run_in_one_call(client: Client, api_key: str, deployment: Deployment) -> None:
    path = corpus_pdf("pdf/lilypond-score-bach-bwv610.pdf")
    with path.open("rb") as f:
        r = client.post(
            "/v1/documents",
            params={
                "task": "prompt",
                "params": json.dumps({"instruction": "Name the composer."}),
                "max_output_tokens": 32,
            },
            headers=auth(api_key),
            files={"file": (path.name, f, "application/pdf")},
        )
    assert r.status_code in (200, 202), r.text
    job = r.json()["job"]
    assert job["task"] == "prompt" and job["document_id"] == r.json()["id"]
    done = wait_job(client, api_key, job["id"])
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    assert done["plan"]["kind"] == "single"


def test_cancel_a_running_job(client: Client, api_key: str, deployment: Deployment) -> None:
    doc = upload(client, api_key, MEDIUM_PDF)
    body = {
        "document_id": doc,
        "task": "prompt",
        "max_output_tokens": 3000,
        "params": {"instruction": "Rewrite the whole document, word for word, twice."},
    }
    job = _post(client, api_key, body).json()

    def generating() -> bool:
        j = client.get(f"/v1/jobs/{job['id']}", headers=auth(api_key)).json()
        return j["status"] == "running" and (j["progress"] or {}).get("completion_tokens", 0) > 0

    wait_for(generating, timeout=180, interval=0.3)
    assert running_requests(deployment.scout.url) >= 1
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(api_key))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert _rows(KvLease, job_id=uuid.UUID(job["id"])) == 0  # released with the status
    t0 = time.monotonic()
    wait_for(lambda: running_requests(deployment.scout.url) == 0, timeout=15, interval=0.2)
    assert time.monotonic() - t0 < 15
    # Whatever the worker's task would still write, it has written once it has ended.
    tasks = _task_ids(uuid.UUID(job["id"]))
    assert tasks, "the job was never sent to a worker"
    wait_for(lambda: _active(tasks) is False, timeout=60, what=f"the job's tasks {tasks} to end")
    j = client.get(f"/v1/jobs/{job['id']}", headers=auth(api_key)).json()
    assert j["status"] == "cancelled" and _rows(Result, job_id=uuid.UUID(job["id"])) == 0
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth(api_key))
    assert again.json()["status"] == "cancelled"
    assert client.get(f"/v1/jobs/{job['id']}/result", headers=auth(api_key)).status_code == 409


def _task_ids(job_id: uuid.UUID) -> set[str]:
    with get_sessionmaker()() as s:
        where = or_(Job.id == job_id, Job.parent_id == job_id)
        return {t for t in s.scalars(select(Job.task_id).where(where)) if t}


def _active(task_ids: set[str]) -> bool | None:
    """Whether a worker still runs one of these tasks; None when no worker answered."""
    replies = app.control.inspect(timeout=2).active()
    if not replies:
        return None
    return any(t["id"] in task_ids for tasks in replies.values() for t in tasks)


def test_list_filters_by_status(client: Client, api_key: str, small: str) -> None:
    r = client.get("/v1/jobs", headers=auth(api_key), params={"status": "succeeded"})
    items = r.json()["items"]
    assert items and all(j["status"] == "succeeded" for j in items)
    assert all(j["id"] for j in items)
    assert (
        client.get("/v1/jobs", headers=auth(api_key), params={"status": "nope"}).status_code == 422
    )


def test_output_that_misses_the_schema_fails_with_the_raw_output(
    client: Client, api_key: str, small: str
) -> None:
    # Valid but unsatisfiable: structured output forces "yes" (the enum), which the
    # `not` that xgrammar does not enforce refuses. Every try fails the check.
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "string", "enum": ["yes"], "not": {"const": "yes"}}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    body = {
        "document_id": small,
        "task": "extract",
        "params": {"schema": schema},
        "max_output_tokens": 32,
    }
    job = _post(client, api_key, body).json()
    done = wait_job(client, api_key, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "bad_output"
    assert "3 times" in done["error"]["reason"]
    assert json.loads(done["error"]["raw_output"]) == {"ok": "yes"}
    r = client.get(f"/v1/jobs/{job['id']}/result", headers=auth(api_key))
    assert r.status_code == 409 and r.json()["error"]["raw_output"] == done["error"]["raw_output"]
    assert _rows(Result, job_id=uuid.UUID(job["id"])) == 0
    assert _rows(KvLease, job_id=uuid.UUID(job["id"])) == 0


def test_schema_the_server_cannot_enforce_fails_with_its_reason(
    client: Client, api_key: str, small: str
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 7}}}
    body = {
        "document_id": small,
        "task": "extract",
        "params": {"schema": schema},
        "max_output_tokens": 32,
    }
    job = _post(client, api_key, body).json()
    done = wait_job(client, api_key, job["id"])
    assert done["status"] == "failed" and done["error"]["code"] == "backend_refused"
    assert "not supported" in done["error"]["reason"] and done["attempts"] == 1


@pytest.mark.timeout(1200)
def test_a_large_split_is_planned_by_the_worker(
    client: Client, api_key: str, deployment: Deployment
) -> None:
    doc = upload(client, api_key, LONG_PDF)
    # The API splits nothing; the worker keeps the deployment's settings.
    api = deployment.settings.model_copy(update={"api_split_max_text_bytes": 0})
    with api_settings(api):
        body = {
            "document_id": doc,
            "task": "summarize",
            "params": {"focus": "the commands"},
            "max_output_tokens": 32,
        }
        r = _post(client, api_key, body)
    assert r.status_code == 202 and r.json()["plan"] is None and r.json()["status"] == "queued"
    done = wait_job(client, api_key, r.json()["id"], timeout=900)
    assert done["status"] == "succeeded", (done["error"], done["progress"])
    assert done["plan"]["kind"] == "map_reduce"
