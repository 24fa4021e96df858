"""The map-reduce join in the database (`service.jobs.tree`), on Postgres and SQLite:
reduce requests appear exactly when their inputs are done, the last request finishes
the parent with one result, a failed request fails its parent, and ending a tree
releases every lease in it. Plans and steps are stored as their JSON and read typed."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from sqlalchemy import JSON, func, select, type_coerce, update

from ingestion.capacity.route_plan import (
    Chunk,
    DocTokens,
    MapStep,
    Plan,
    ReduceGroup,
    ReduceLevel,
    ReduceStep,
    Request,
    step_from_json,
)
from service.jobs import tree
from service.models import Job, JobStatus, KvLease, Result
from tests.ledger.conftest import T0, World


def _req(role: str, n: int) -> Request:
    return Request(role, "google/gemma-3-270m", n, 16, 1000 + n, 10, ("b",))


def _plan(role: str) -> Plan:
    chunks = [Chunk(i, 2 * i + 1, 2 * i + 2, 0, 1, 0, 1, 100, True) for i in range(4)]
    groups = (ReduceGroup(0, 1, _req(role, 50)), ReduceGroup(2, 3, _req(role, 60)))
    top = (ReduceGroup(0, 1, _req(role, 70)),)
    return Plan(
        "map_reduce",
        16,
        (DocTokens(role, 400, True),),
        ((role, 30),),
        None,
        tuple(MapStep(c, _req(role, 130)) for c in chunks),
        (ReduceLevel(1, groups), ReduceLevel(2, top)),
    )


def _parent(world: World, status: JobStatus) -> uuid.UUID:
    with world.sessions() as s:
        job = Job(
            tenant_id=world.tenant_id,
            document_id=world.doc,
            task="summarize",
            max_output_tokens=16,
            idempotency_key=uuid.uuid4().hex,
            status=status,
        )
        s.add(job)
        s.commit()
        return job.id


def _succeed(world: World, job_id: uuid.UUID, text: str) -> tuple[list[uuid.UUID], bool]:
    with world.sessions() as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.status = JobStatus.succeeded
        s.add(Result(job_id=job_id, text=text, prompt_tokens=10, completion_tokens=2))
        s.flush()
        out = tree.fan_in(s, job, T0, lambda r: 1.0)
        s.commit()
        return out


def _kids(world: World, parent: uuid.UUID) -> dict[tuple[str, int, int], uuid.UUID]:
    with world.sessions() as s:
        out = {}
        for k in tree.children(s, parent):
            assert k.step is not None
            out[(k.step.stage, *k.step.key)] = k.id
        return out


def test_reduce_requests_appear_when_their_inputs_are_done(world: World) -> None:
    parent_id = _parent(world, JobStatus.queued)
    plan = _plan(world.role)
    with world.sessions() as s:
        parent = s.get(Job, parent_id)
        assert parent is not None
        sent = tree.start(s, parent, plan, T0, {i: 1.0 for i in range(7)})
        s.commit()
    assert len(sent) == 4
    kids = _kids(world, parent_id)
    assert sorted(kids) == [("map", 0, i) for i in range(4)]
    assert _succeed(world, kids[("map", 0, 0)], "a") == ([], False)
    new, _ = _succeed(world, kids[("map", 0, 1)], "b")
    assert len(new) == 1 and set(_kids(world, parent_id)) >= {("reduce", 1, 0)}
    with world.sessions() as s:  # the join is idempotent: again, nothing new
        again = s.get(Job, kids[("map", 0, 1)])
        assert again is not None and tree.fan_in(s, again, T0, lambda r: 1.0) == ([], False)
        s.rollback()
    assert _succeed(world, kids[("map", 0, 3)], "d") == ([], False)  # 2 is not done yet
    assert len(_succeed(world, kids[("map", 0, 2)], "c")[0]) == 1
    kids = _kids(world, parent_id)
    assert _succeed(world, kids[("reduce", 1, 0)], "ab") == ([], False)
    assert len(_succeed(world, kids[("reduce", 1, 1)], "cd")[0]) == 1
    kids = _kids(world, parent_id)
    with world.sessions() as s:
        top = s.get(Job, kids[("reduce", 2, 0)])
        assert top is not None and top.step is not None
        assert isinstance(top.step, ReduceStep)
        assert (top.step.first, top.step.last, top.kv_bytes) == (0, 1, 1070)
        assert tree.group_pages(plan, 2, 0) == (1, 8) and tree.group_pages(plan, 1, 1) == (5, 8)
    assert _succeed(world, kids[("reduce", 2, 0)], "abcd") == ([], True)
    with world.sessions() as s:
        parent = s.get(Job, parent_id)
        assert parent is not None and parent.status == JobStatus.succeeded
        assert parent.progress == {
            "map_total": 4,
            "map_done": 4,
            "reduce_done": 3,
            "reduce_total": 3,
        }
        result = s.scalar(select(Result).where(Result.job_id == parent_id))
        assert result is not None and result.text == "abcd"
        assert (result.prompt_tokens, result.completion_tokens) == (70, 14)


def test_ending_a_tree_releases_its_leases(world: World) -> None:
    backend = world.backend(10_000)
    parent_id = _parent(world, JobStatus.running)
    done, running, waiting = (world.job(100, parent_id=parent_id) for _ in range(3))
    with world.sessions() as s:
        for job_id, state in ((done, JobStatus.succeeded), (running, JobStatus.running)):
            s.execute(update(Job).where(Job.id == job_id).values(status=state))
        s.commit()
    with world.sessions() as s:
        s.add(
            KvLease(
                job_id=running,
                backend_id=backend,
                kv_bytes=100,
                kv_blocks=1,
                expires_at=T0 + timedelta(seconds=60),
            )
        )
        s.commit()
        moved = tree.end_tree(
            s, [parent_id], JobStatus.cancelled, T0, code="cancelled", reason="by the client"
        )
        s.commit()
    assert set(moved) == {parent_id, running, waiting}
    with world.sessions() as s:
        states = {j: s.get(Job, j).status for j in (parent_id, done, running, waiting)}  # type: ignore[union-attr]
        assert states == {
            parent_id: JobStatus.cancelled,
            done: JobStatus.succeeded,
            running: JobStatus.cancelled,
            waiting: JobStatus.cancelled,
        }
        leases = s.scalar(
            select(func.count()).select_from(KvLease).where(KvLease.job_id == running)
        )
        assert leases == 0
    with world.sessions() as s:  # ending it again moves nothing
        assert tree.end_tree(s, [parent_id], JobStatus.failed, T0) == []


def _raw(s: Any, column: Any, job_id: uuid.UUID) -> Any:
    # As plain JSON, past the typed column: what an older reader (or psql) sees.
    return s.scalar(select(type_coerce(column, JSON)).where(Job.id == job_id))


def test_plans_and_steps_are_stored_as_json_and_read_typed(world: World) -> None:
    parent_id = _parent(world, JobStatus.queued)
    plan = _plan(world.role)
    with world.sessions() as s:
        parent = s.get(Job, parent_id)
        assert parent is not None
        tree.start(s, parent, plan, T0, {i: 1.0 for i in range(7)})
        s.commit()
    with world.sessions() as s:
        ids = {k.id: k.step for k in tree.children(s, parent_id)}
        assert list(ids.values()) == list(plan.map)
        assert _raw(s, Job.plan, parent_id) == json.loads(json.dumps(plan.to_json()))
        for i, (kid, step) in enumerate(ids.items()):
            raw = _raw(s, Job.step, kid)
            assert raw["stage"] == "map" and raw["chunk"]["index"] == i
            assert raw == json.loads(json.dumps(asdict(plan.map[i]) | {"stage": "map"}))
            assert step == step_from_json(raw)
        stored = s.get(Job, parent_id)
        assert stored is not None and stored.plan == plan


def test_a_failed_request_fails_its_job_and_ends_the_others(world: World) -> None:
    parent_id = _parent(world, JobStatus.queued)
    with world.sessions() as s:
        parent = s.get(Job, parent_id)
        assert parent is not None
        kids = tree.start(s, parent, _plan(world.role), T0, {i: 1.0 for i in range(7)})
        s.commit()
    with world.sessions() as s:
        s.execute(update(Job).where(Job.id == kids[1]).values(status=JobStatus.failed))
        moved = tree.fail_parent(s, kids[1], T0, "the output was unusable")
        s.commit()
    assert set(moved) == {parent_id, kids[0], kids[2], kids[3]}
    with world.sessions() as s:
        parent = s.get(Job, parent_id)
        assert parent is not None and parent.status == JobStatus.failed
        assert parent.error_code == "map_failed"
        assert parent.error_reason == "a map request failed: the output was unusable"
        # Ended already: a second report (the sweeper after the run) moves nothing.
        assert tree.fail_parent(s, kids[1], T0, "again") == []
        assert tree.fail_parent(s, parent_id, T0, "no parent") == []
