"""Every path that writes a job's final state writes its webhook deliveries in the
same transaction: a request released by its run (succeeded or failed), a map-reduce
job finished by its last request's fan-in. Only clients' jobs are announced, once.
On Postgres and SQLite (the `world` fixture)."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from service import ledger
from service.jobs import tree
from service.models import Batch, Job, JobStatus, WebhookDelivery, WebhookEndpoint
from service.webhooks.signing import generate_secret
from tests.ledger.conftest import World, at
from tests.ledger.test_tree import _kids, _parent, _plan, _succeed

TTL = 30.0


def _endpoint(w: World, url: str = "https://hooks.example/in") -> uuid.UUID:
    with w.sessions() as s:
        e = WebhookEndpoint(tenant_id=w.tenant_id, url=url, secrets=[generate_secret()])
        s.add(e)
        s.commit()
        return e.id


def _events(w: World, job_id: uuid.UUID) -> list[tuple[str | None, str, dict[str, object]]]:
    with w.sessions() as s:
        rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id))
        return sorted(
            ((str(d.endpoint_id) if d.endpoint_id else None, d.url, d.payload) for d in rows),
            key=lambda e: e[1],
        )


def _run_and_release(w: World, job_id: uuid.UUID, status: JobStatus) -> None:
    with w.sessions() as s:
        (admitted,) = ledger.try_admit(s, w.role, at(1), TTL).admitted
        assert admitted.job_id == job_id
        assert ledger.release(s, job_id, at(2), status, lease_id=admitted.lease_id)
        assert not ledger.release(s, job_id, at(3), status)  # once: no second event


def _payload(event: str, job_id: uuid.UUID, status: str) -> dict[str, object]:
    data = {"id": str(job_id), "object": "job", "status": status}
    if status == "succeeded":  # where to read it, not the result itself
        data["result_url"] = f"/v1/jobs/{job_id}/result"
    return {"type": event, "timestamp": at(2).isoformat().replace("+00:00", "Z"), "data": data}


def test_a_released_job_is_announced_to_endpoint_and_callback(world: World) -> None:
    w = world
    endpoint = _endpoint(w)
    w.backend(1000)
    job = w.job(10, 1.0, webhook_url="https://cb.example/done")
    _run_and_release(w, job, JobStatus.succeeded)
    expected = _payload("job.succeeded", job, "succeeded")
    assert _events(w, job) == [
        (None, "https://cb.example/done", expected),
        (str(endpoint), "https://hooks.example/in", expected),
    ]


def test_a_failed_run_is_announced_and_a_batchs_job_is_not(world: World) -> None:
    w = world
    _endpoint(w)
    w.backend(1000)
    job = w.job(10, 1.0)
    _run_and_release(w, job, JobStatus.failed)
    assert [e[2]["type"] for e in _events(w, job)] == ["job.failed"]

    with w.sessions() as s:
        batch = Batch(tenant_id=w.tenant_id)
        s.add(batch)
        s.commit()
        batch_id = batch.id
    in_batch = w.job(10, 1.0, batch_id=batch_id)
    _run_and_release(w, in_batch, JobStatus.failed)
    assert _events(w, in_batch) == []


def test_a_map_reduce_job_is_announced_when_its_last_request_fans_in(world: World) -> None:
    w = world
    _endpoint(w)
    parent_id = _parent(w, JobStatus.queued)
    with w.sessions() as s:
        parent = s.get(Job, parent_id)
        assert parent is not None
        tree.start(s, parent, _plan(w.role), at(0), {i: 1.0 for i in range(7)})
        s.commit()
    done: set[uuid.UUID] = set()
    finished = False
    while not finished:  # each round the requests that exist now; reduces appear as maps end
        ready = [k for k in _kids(w, parent_id).values() if k not in done]
        assert ready, "the tree stopped before its parent finished"
        for kid in ready:
            finished = _succeed(w, kid, "x")[1] or finished
            done.add(kid)
    assert len(done) == 7 and all(_events(w, k) == [] for k in done)  # requests: never
    (event,) = _events(w, parent_id)
    assert event[2]["type"] == "job.succeeded" and event[2]["data"] == {
        "id": str(parent_id),
        "object": "job",
        "status": "succeeded",
        "result_url": f"/v1/jobs/{parent_id}/result",
    }
