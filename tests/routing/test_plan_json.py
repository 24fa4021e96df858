"""The typed plan: a `Plan` and a `Step` survive JSON (what `jobs.plan` and `jobs.step`
hold) unchanged, the JSON keeps the shape rows were stored in before the steps were
typed, and anything malformed is a ValueError, never a half-read plan."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.capacity.route_plan import (
    Chunk,
    DocTokens,
    MapStep,
    Plan,
    ReduceGroup,
    ReduceLevel,
    ReduceStep,
    Rejection,
    Request,
    Step,
    step_from_json,
)
from tests.examples import examples

N = st.integers(min_value=0, max_value=2**53)
TEXT = st.text(max_size=20)
ROLE = st.sampled_from(["gemma", "scout"])
IDS = st.lists(TEXT, max_size=3).map(tuple)

REQUEST = st.builds(Request, ROLE, TEXT, N, N, N, N, IDS)
CHUNK = st.builds(Chunk, N, N, N, N, N, N, N, N, st.booleans(), N, N)
MAP_STEP = st.builds(MapStep, CHUNK, REQUEST)
REDUCE_STEP = st.builds(ReduceStep, N, N, N, N, REQUEST)
STEP: st.SearchStrategy[Step] = st.one_of(MAP_STEP, REDUCE_STEP)
LEVEL = st.builds(
    ReduceLevel, N, st.lists(st.builds(ReduceGroup, N, N, REQUEST), max_size=3).map(tuple)
)
PLAN = st.builds(
    Plan,
    st.sampled_from(["single", "map_reduce"]),
    N,
    st.lists(st.builds(DocTokens, ROLE, N, st.booleans(), st.none() | TEXT), max_size=2).map(tuple),
    st.lists(st.tuples(ROLE, N), max_size=2).map(tuple),
    st.none() | REQUEST,
    st.lists(MAP_STEP, max_size=4).map(tuple),
    st.lists(LEVEL, max_size=3).map(tuple),
    st.lists(TEXT, max_size=3).map(tuple),
    st.lists(st.builds(Rejection, ROLE, TEXT, IDS, TEXT), max_size=2).map(tuple),
)


def _through_json(data: dict[str, Any]) -> Any:
    return json.loads(json.dumps(data))


@settings(max_examples=examples(100, 200), deadline=None)
@given(plan=PLAN)
def test_a_plan_survives_json(plan: Plan) -> None:
    assert Plan.from_json(_through_json(plan.to_json())) == plan


@settings(max_examples=examples(100, 200), deadline=None)
@given(step=STEP)
def test_a_step_survives_json_and_keeps_its_place(step: Step) -> None:
    back = step_from_json(_through_json(step.to_json()))
    assert back == step and type(back) is type(step)
    if isinstance(step, MapStep):
        assert (back.stage, back.key) == ("map", (0, step.chunk.index))
    else:
        assert (back.stage, back.key) == ("reduce", (step.level, step.group))


@given(chunk=CHUNK, request=REQUEST, ints=st.tuples(N, N, N, N))
def test_steps_keep_the_stored_shape(
    chunk: Chunk, request: Request, ints: tuple[int, int, int, int]
) -> None:
    # What `service.jobs.tree` wrote into `jobs.step` before steps were typed: rows
    # stored then must read, and new rows must look the same to older readers.
    old_map = {"stage": "map", "chunk": asdict(chunk), "request": asdict(request)}
    level, group, first, last = ints
    old_reduce = {"stage": "reduce", "level": level, "group": group, "first": first,
                  "last": last, "request": asdict(request)}  # fmt: skip
    for old in (old_map, old_reduce):
        step = step_from_json(_through_json(old))
        assert _through_json(step.to_json()) == _through_json(old)


def _good_step() -> dict[str, Any]:
    req = Request("gemma", "m", 10, 4, 100, 1, ("b",))
    return _through_json(ReduceStep(1, 0, 0, 3, req).to_json())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.pop("level"), "malformed step"),
        (lambda d: d.update(stage="join"), "bad step stage"),
        (lambda d: d.update(group="0"), "not an integer"),
        (lambda d: d.update(first=True), "not an integer"),
        (lambda d: d["request"].pop("kv_bytes"), "malformed step"),
        (lambda d: d.update(request=None), "malformed step"),
    ],
)
def test_a_malformed_step_is_refused(change: Any, why: str) -> None:
    data = _good_step()
    change(data)
    with pytest.raises(ValueError, match=why):
        step_from_json(data)


def test_a_malformed_plan_is_refused() -> None:
    plan = Plan("single", 4, (DocTokens("gemma", 6, True),), (("gemma", 4),),
                Request("gemma", "m", 10, 4, 100, 1, ("b",)))  # fmt: skip
    for change in (
        lambda d: d.update(version=2),
        lambda d: d.update(kind="both"),
        lambda d: d["request"].update(input_tokens=1.5),
        lambda d: d.pop("map"),
    ):
        data = _through_json(plan.to_json())
        change(data)
        with pytest.raises(ValueError):
            Plan.from_json(data)
