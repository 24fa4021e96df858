"""Deleting a document that jobs are running on, through the API on real Postgres.

The jobs are admitted by the real KV ledger (a lease row held, as a worker polling
for admission would hold one); no vLLM is needed for that. The policy: a document
with unfinished jobs is refused (409) unless `?cancel_jobs=true`, which cancels them
(leases released) in the delete's transaction; jobs and results outlive it.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from service import ledger
from service.db import get_sessionmaker
from service.models import Backend, Job, JobStatus, KvLease, Result, utcnow
from tests.conftest import auth, wait_for


def _upload(client: Any, key: str) -> str:
    body = f"a document to delete {uuid.uuid4()}\n".encode() * 20
    resp = client.post("/v1/documents", headers=auth(key), files={"file": ("d.txt", body)})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["id"])


def _job(client: Any, key: str, doc_id: str) -> uuid.UUID:
    resp = client.post(
        "/v1/jobs",
        headers=auth(key),
        json={"document_id": doc_id, "task": "summarize", "idempotency_key": uuid.uuid4().hex},
    )
    assert resp.status_code == 202, resp.text
    return uuid.UUID(resp.json()["id"])


def _admitted(role: str, parent: uuid.UUID, child_of: uuid.UUID) -> ledger.Admitted:
    """Make `parent` a running map-reduce parent and `child_of`'s child request wait
    for KV on a backend of `role`, as the planner does; the ledger admits it."""
    now = utcnow()
    with get_sessionmaker()() as s:
        s.add(Backend(role=role, url=f"http://{role}:8000", kv_capacity_bytes=10**9, healthy=True))
        s.execute(update(Job).where(Job.id == parent).values(status=JobStatus.running))
        s.execute(
            update(Job)
            .where(Job.id == child_of)
            .values(
                parent_id=parent,
                status=JobStatus.waiting_for_capacity,
                role=role,
                kv_bytes=4096,
                kv_blocks=1,
                est_duration_s=60.0,
                waiting_since=now,
                heartbeat_at=now,
            )
        )
        s.commit()
        result = ledger.try_admit(s, role, utcnow(), 60.0)
    assert [a.job_id for a in result.admitted] == [child_of]
    return result.admitted[0]


def _leases(job_id: uuid.UUID) -> int:
    with get_sessionmaker()() as s:
        return s.scalar(select(func.count()).where(KvLease.job_id == job_id)) or 0


def test_delete_with_live_jobs_is_refused_or_cancels_them(client: Any, api_key: str) -> None:
    doc_id = _upload(client, api_key)
    parent, child = _job(client, api_key, doc_id), _job(client, api_key, doc_id)
    done = _job(client, api_key, doc_id)
    with get_sessionmaker()() as s:
        s.execute(update(Job).where(Job.id == done).values(status=JobStatus.succeeded))
        s.add(Result(job_id=done, text="the summary"))
        s.commit()
    lease = _admitted(f"r{uuid.uuid4().hex[:12]}", parent, child)
    assert _leases(child) == 1
    url = f"/v1/documents/{doc_id}"

    refused = client.delete(url, headers=auth(api_key))
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    # The ids a client knows: the parent it created, not its internal requests.
    assert error["code"] == "document_in_use" and error["job_ids"] == [str(parent)]
    assert client.get(url, headers=auth(api_key)).status_code == 200
    assert _leases(child) == 1
    with get_sessionmaker()() as s:
        assert ledger.renew(s, child, utcnow(), 60.0, lease_id=lease.lease_id)

    gone = client.delete(f"{url}?cancel_jobs=true", headers=auth(api_key))
    assert gone.status_code == 204, gone.text
    assert client.get(url, headers=auth(api_key)).status_code == 404
    assert _leases(child) == 0
    with get_sessionmaker()() as s:
        # The worker's next heartbeat finds the lease gone and aborts its request.
        assert not ledger.renew(s, child, utcnow(), 60.0, lease_id=lease.lease_id)
        rows = s.execute(select(Job.id, Job.status, Job.error_code, Job.document_id)).all()
    states = {r.id: (r.status, r.error_code, r.document_id) for r in rows}
    assert states[parent] == (JobStatus.cancelled, "cancelled", None)
    assert states[child] == (JobStatus.cancelled, "cancelled", None)
    assert states[done] == (JobStatus.succeeded, None, None)

    # A client polling the job sees how it ended, not a 404.
    polled = client.get(f"/v1/jobs/{parent}", headers=auth(api_key))
    assert polled.status_code == 200, polled.text
    assert polled.json()["status"] == "cancelled" and polled.json()["document_id"] is None
    result = client.get(f"/v1/jobs/{done}/result", headers=auth(api_key))
    assert result.status_code == 200 and result.json()["text"] == "the summary"


def test_document_whose_jobs_all_ended_is_deleted_at_once(client: Any, api_key: str) -> None:
    doc_id = _upload(client, api_key)
    job = _job(client, api_key, doc_id)
    with get_sessionmaker()() as s:
        s.execute(update(Job).where(Job.id == job).values(status=JobStatus.failed))
        s.commit()
    assert client.delete(f"/v1/documents/{doc_id}", headers=auth(api_key)).status_code == 204
    assert client.get(f"/v1/jobs/{job}", headers=auth(api_key)).json()["status"] == "failed"


def test_job_created_while_its_document_is_deleted_is_404(
    client: Any, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete holds the document's row; a job created meanwhile waits for it at
    its foreign key check, then finds the document gone: 404, not a 500."""
    from service.jobs import tree

    doc_id = _upload(client, api_key)
    inside, go_on = threading.Event(), threading.Event()
    real = tree.end_tree

    def gated(*args: Any, **kwargs: Any) -> list[uuid.UUID]:
        inside.set()
        assert go_on.wait(120), "the test never let the delete go on"
        return real(*args, **kwargs)

    monkeypatch.setattr(tree, "end_tree", gated)
    out: dict[str, Any] = {}

    def call(name: str, method: str, url: str, **kw: Any) -> None:
        try:
            out[name] = client.request(method, url, headers=auth(api_key), **kw)
        except Exception as exc:  # the TestClient re-raises a 500's exception
            out[name] = exc

    deleter = threading.Thread(target=call, args=("d", "DELETE", f"/v1/documents/{doc_id}"))
    deleter.start()
    assert inside.wait(60), "the delete never got inside its transaction"
    body = {"document_id": doc_id, "task": "summarize", "idempotency_key": uuid.uuid4().hex}
    creator = threading.Thread(target=call, args=("c", "POST", "/v1/jobs"), kwargs={"json": body})
    creator.start()
    wait_for(lambda: not creator.is_alive() or _lock_waiters() > 0, timeout=60)
    go_on.set()
    deleter.join(120)
    creator.join(120)
    assert getattr(out["d"], "status_code", out["d"]) == 204
    assert getattr(out["c"], "status_code", out["c"]) == 404, out["c"]


def _lock_waiters() -> int:
    with get_sessionmaker()() as s:
        return int(
            s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
            )
            or 0
        )
