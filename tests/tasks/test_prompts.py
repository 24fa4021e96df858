"""`ingestion.tasks.prompts` and `tasks.instruction_text`: the messages each request
sends, and the fixed text the router budgets for them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from ingestion.tasks.output import PAGE_CITATION, cited_pages
from ingestion.tasks.prompts import (
    STAGES,
    Stage,
    build_messages,
    page_marker,
    render_pages,
    render_parts,
    response_format,
)
from ingestion.tasks.specs import (
    DRY_RUN_PARAMS,
    TASK_NAMES,
    TaskError,
    instruction_text,
    reduce_instruction_text,
    validate,
)

PARAMS: dict[str, dict[str, Any]] = {
    "summarize": validate("summarize", {"focus": "the budget tables"}),
    "extract": validate(
        "extract",
        {"schema": {"type": "object", "properties": {"invoice_total": {"type": "number"}}}},
    ),
    "ask": validate("ask", {"questions": ["Who signed the lease?", "What is the rent?"]}),
    "classify": validate(
        "classify", {"labels": ["lease", "invoice", "memo"], "instruction": "By document kind."}
    ),
    "prompt": validate("prompt", {"instruction": "List every deadline with its page."}),
}
# Every string the model must see for each task's parameters.
SHOWN = {
    "summarize": ["the budget tables"],
    "extract": [json.dumps(PARAMS["extract"]["schema"])],
    "ask": ["Who signed the lease?", "What is the rent?"],
    "classify": ["lease", "invoice", "memo", "By document kind."],
    "prompt": ["List every deadline with its page."],
}
ALL_PARAMS = [(t, p) for t in TASK_NAMES for p in (PARAMS[t], DRY_RUN_PARAMS[t])]
DOC = render_pages([(3, "The lease is signed by Ada."), (4, ""), (5, "Rent: 900 a month.")])
PARTS = render_parts([("pages 1-40", "Ada signed [p. 3]."), ("pages 41-80", "not found")])


def test_page_marker() -> None:
    assert page_marker(1) == "[page 1]\n"
    assert page_marker(12) == "[page 12]\n"
    for bad in (0, -3):
        with pytest.raises(ValueError):
            page_marker(bad)


def test_render_pages_skips_empty_pages() -> None:
    pages = [(1, "One."), (2, ""), (3, "  \n"), (4, "Four.\n")]
    assert render_pages(pages) == "[page 1]\nOne.\n\n[page 4]\nFour.\n"
    assert render_pages([]) == ""
    assert render_pages(iter([(7, "x")])) == "[page 7]\nx"


PAGE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="["), max_size=40)


@given(st.lists(st.tuples(st.integers(1, 10**6), PAGE_TEXT), max_size=12).map(sorted))
def test_render_pages_keeps_every_page_in_order(pages: list[tuple[int, str]]) -> None:
    out = render_pages(pages)
    shown = [(n, t) for n, t in pages if t.strip()]
    position = 0
    for n, text in shown:
        found = out.find(page_marker(n) + text, position)
        assert found >= position
        position = found + len(page_marker(n) + text)
    # Without "[" in the text, the markers are the only bracketed citations: one per
    # page with text, in order, read back by the same pattern answers are checked with.
    bracketed = [int(m.group("list")) for m in PAGE_CITATION.finditer(out) if m.group("list")]
    assert bracketed == [n for n, _ in shown]


def test_markers_are_what_citations_are_checked_with() -> None:
    for n in (1, 9, 123, 4096):
        assert list(cited_pages(page_marker(n))) == [n]


def test_render_parts() -> None:
    out = render_parts([("pages 1-9", " First answer. "), ("pages 10-20", ""), ("p", "Third")])
    assert out == (
        "[part 1: pages 1-9]\nFirst answer.\n\n[part 2: pages 10-20]\n(empty answer)\n\n"
        "[part 3: p]\nThird"
    )
    # Headings cite nothing, so they never count as citations of the combined answer.
    assert list(cited_pages(out)) == []


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("task", TASK_NAMES)
def test_messages_carry_the_text_and_the_parameters(task: str, stage: Stage) -> None:
    text = PARTS if stage == "reduce" else DOC
    messages = build_messages(task, PARAMS[task], stage, text)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "[page N]" in messages[0]["content"] and "[p. N]" in messages[0]["content"]
    user = messages[1]["content"]
    assert text in user
    for shown in SHOWN[task]:
        assert shown in user
    assert ("one part of a longer document" in user) == (stage == "map")
    if stage == "reduce":
        assert "consecutive parts" in user
    # The document comes first, so every task on it shares one cached prefix.
    assert user.index(text) < min(user.index(s) for s in SHOWN[task])


def test_map_prompts_say_what_to_do_with_a_part() -> None:
    def user(task: str) -> str:
        return build_messages(task, PARAMS[task], "map", DOC)[1]["content"]

    assert '"not found"' in user("ask") and "only from this part" in user("ask")
    assert "classify this part" in user("classify")
    assert "extract only what this part holds" in user("extract")
    assert "summarize only this part" in user("summarize")


def test_the_system_message_is_the_same_for_every_request() -> None:
    systems = {
        build_messages(t, PARAMS[t], s, "x")[0]["content"] for t in TASK_NAMES for s in STAGES
    }
    assert len(systems) == 1


def _fixed(task: str, params: dict[str, Any], stage: Stage, text: str) -> str:
    """The messages' text with the one copy of `text` taken out."""
    system, user = (m["content"] for m in build_messages(task, params, stage, text))
    assert user.count(text) == 1
    i = user.index(text)
    return system + user[:i] + user[i + len(text) :]


@pytest.mark.parametrize(("task", "params"), ALL_PARAMS)
def test_instruction_text_is_all_the_fixed_text(task: str, params: dict[str, Any]) -> None:
    doc = render_pages([(1, "Sentinel 7f3a page one."), (2, "Page two.")])
    assert _fixed(task, params, "map", doc) == instruction_text(task, params)
    # A single request's fixed text is the map's less its note on parts: never more.
    single = _fixed(task, params, "single", doc)
    whole = instruction_text(task, params)
    assert len(single) < len(whole)
    assert whole.startswith(single[: single.index("</document>")])
    assert whole.endswith(single[single.index("</document>") + len("</document>\n\n") :])
    parts = render_parts([("pages 1-2", "Sentinel 7f3a answer.")])
    assert _fixed(task, params, "reduce", parts) == reduce_instruction_text(task, params)
    for shown in SHOWN[task] if params is PARAMS[task] else []:
        assert shown in whole and shown in reduce_instruction_text(task, params)


@given(st.text(max_size=300), st.sampled_from(STAGES))
def test_the_input_is_spliced_in_whole_at_one_place(text: str, stage: Stage) -> None:
    for task in TASK_NAMES:
        params = PARAMS[task]
        system, bare = (m["content"] for m in build_messages(task, params, stage, ""))
        fixed = reduce_instruction_text if stage == "reduce" else instruction_text
        if stage != "single":
            assert system + bare == fixed(task, params)
        at = build_messages(task, params, stage, "\x00")[1]["content"].index("\x00")
        _, user = (m["content"] for m in build_messages(task, params, stage, text))
        assert user == bare[:at] + text + bare[at:]


def test_unknown_tasks_and_stages() -> None:
    with pytest.raises(TaskError):
        instruction_text("translate", {})
    with pytest.raises(TaskError):
        reduce_instruction_text("translate", {})
    with pytest.raises(ValueError, match="unknown task"):
        build_messages("translate", {}, "single", "x")
    with pytest.raises(ValueError, match="unknown stage"):
        build_messages("summarize", {}, "combine", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown stage"):
        response_format("ask", PARAMS["ask"], "final")  # type: ignore[arg-type]


@pytest.mark.parametrize("stage", STAGES)
def test_response_formats(stage: Stage) -> None:
    assert response_format("summarize", PARAMS["summarize"], stage) is None
    assert response_format("prompt", PARAMS["prompt"], stage) is None
    for task in ("extract", "ask", "classify"):
        fmt = response_format(task, PARAMS[task], stage)
        assert fmt is not None and set(fmt) == {"type", "json_schema"}
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] == task and fmt["json_schema"]["strict"] is True
        Draft202012Validator.check_schema(fmt["json_schema"]["schema"])
        assert "guided_json" not in json.dumps(fmt)

    extract = response_format("extract", PARAMS["extract"], stage)
    assert extract is not None
    assert extract["json_schema"]["schema"] == PARAMS["extract"]["schema"]
    assert extract["json_schema"]["schema"] is not PARAMS["extract"]["schema"]

    ask = response_format("ask", PARAMS["ask"], stage)
    assert ask is not None
    check = Draft202012Validator(ask["json_schema"]["schema"])
    one = {"answer": "Ada [p. 3]", "pages": [3]}
    assert check.is_valid({"answers": [one, {**one, "pages": []}]})
    assert not check.is_valid({"answers": [one]})
    assert not check.is_valid({"answers": [one, one, one]})
    assert not check.is_valid({"answers": [one, {**one, "pages": ["3"]}]})
    bounded = response_format("ask", PARAMS["ask"], stage, (2, 4))
    assert bounded is not None
    check = Draft202012Validator(bounded["json_schema"]["schema"])
    assert check.is_valid({"answers": [one, {**one, "pages": [2, 4]}]})
    assert not check.is_valid({"answers": [one, {**one, "pages": [5]}]})
    assert not check.is_valid({"answers": [one, {**one, "pages": [1]}]})

    classify = response_format("classify", PARAMS["classify"], stage)
    assert classify is not None
    check = Draft202012Validator(classify["json_schema"]["schema"])
    assert check.is_valid({"label": "memo", "reason": "A memo [p. 1]."})
    assert not check.is_valid({"label": "Memo", "reason": ""})
    assert not check.is_valid({"label": "memo"})
