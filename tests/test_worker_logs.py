"""A real Celery worker's log (main process and pool child) is JSON lines, and a task's
lines carry the ids of what it runs on: a parse its document's and the id of the
upload's request, a job its own and its document's. No vLLM: the job is one already
ended, which its task finds and leaves."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from service.db import get_sessionmaker
from service.models import Document, Job, JobStatus, utcnow
from service.queue import dispatch_job
from tests.api.test_documents import settled
from tests.conftest import auth, start_worker, stop_worker, wait_for


def _lines(log: Path) -> list[dict[str, Any]]:
    # Celery prints its start-up banner to stdout as it is, before any log line.
    text = log.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_workers_lines_are_json_with_the_document_and_job_ids(
    client: Any, api_key: str, broker: Any, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(log)
    try:
        body = f"A page to parse for the worker-log test, {uuid.uuid4()}.\n".encode()
        request_id = f"worker-log-{uuid.uuid4().hex[:12]}"
        headers = {**auth(api_key), "X-Request-ID": request_id}
        resp = client.post("/v1/documents", headers=headers, files={"file": ("p.txt", body)})
        assert resp.status_code == 202, resp.text
        doc_id = resp.json()["id"]
        assert settled(client, api_key, doc_id)["status"] == "parsed"
        with get_sessionmaker()() as session:
            doc = session.get(Document, uuid.UUID(doc_id))
            assert doc is not None
            tenant_id = doc.tenant_id
            job = Job(
                tenant_id=tenant_id,
                document_id=doc.id,
                task="summarize",
                max_output_tokens=16,
                idempotency_key=uuid.uuid4().hex,
                status=JobStatus.cancelled,
                finished_at=utcnow(),
            )
            session.add(job)
            session.commit()
            job_id = str(job.id)
        dispatch_job(job_id, 0)

        def job_done() -> list[dict[str, Any]]:
            return [
                line
                for line in _lines(log)
                if line.get("job_id") == job_id and "succeeded" in line["message"]
            ]

        [done] = wait_for(job_done, timeout=60, what="the job task's success line")
    finally:
        stop_worker(worker)
    assert done["document_id"] == doc_id and done["logger"] == "celery.app.trace"
    lines = _lines(log)
    parsed = [
        line
        for line in lines
        if line.get("document_id") == doc_id and "longdoc.ingest" in line["message"]
    ]
    assert parsed and all(line["task_id"] for line in parsed), lines
    # The upload's request id came with its task: the parse's lines carry it; the job,
    # sent by this test outside any request, has none.
    assert {line.get("request_id") for line in parsed} == {request_id}, parsed
    assert "request_id" not in done
    # The main process's lines (the consumer's) are JSON too, not only the child's.
    assert any(line["logger"] == "celery.worker.strategy" for line in lines), lines
    assert str(tenant_id) not in log.read_text()
