"""`ingestion.tasks.specs.validate`: every parameter a client sends is checked, normalized,
and refused with a field and a reason it can act on."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.tasks.specs import DRY_RUN_PARAMS, TASK_NAMES, TEMPLATE_TOKENS, TaskError, validate
from tests.examples import examples


def refused(task: Any, params: Any) -> TaskError:
    with pytest.raises(TaskError) as info:
        validate(task, params)
    err = info.value
    assert str(err) == f"{err.field}: {err.reason}"
    return err


def test_names_and_budget() -> None:
    assert TASK_NAMES == ("summarize", "extract", "ask", "classify", "prompt")
    assert TEMPLATE_TOKENS == 64


@pytest.mark.parametrize("task", ["summarise", "", "ASK", None, 3, ["ask"], {"a": 1}, "x" * 10**5])
def test_unknown_tasks_list_the_known_ones(task: Any) -> None:
    err = refused(task, {})
    assert err.field == "task"
    assert "known tasks: summarize, extract, ask, classify, prompt" in err.reason
    assert len(str(err)) < 300


@pytest.mark.parametrize("params", [[], "focus", 3, True, [("focus", "x")]])
def test_params_must_be_an_object(params: Any) -> None:
    err = refused("summarize", params)
    assert err.field == "params" and err.reason.startswith("must be an object")


@pytest.mark.parametrize(
    ("task", "params", "field"),
    [
        ("summarize", {"focus": "x", "extra": 1}, "extra"),
        ("summarize", {"questions": ["q"]}, "questions"),
        ("ask", {"questions": ["q"], "labels": ["a"]}, "labels"),
        ("prompt", {"instruction": "x", "Instruction": "y"}, "Instruction"),
        ("classify", {"labels": ["a"], 7: "x"}, "7"),
        ("extract", {"schema": {"type": "object"}, "guided_json": {}}, "guided_json"),
    ],
)
def test_unknown_keys_are_refused(task: str, params: dict[Any, Any], field: str) -> None:
    err = refused(task, params)
    assert err.field == field and "unknown parameter" in err.reason


@pytest.mark.parametrize(
    ("task", "field"), [("extract", "schema"), ("ask", "questions"), ("classify", "labels"),
                        ("prompt", "instruction")]
)  # fmt: skip
@pytest.mark.parametrize("params", [None, {}])
def test_required_keys(task: str, field: str, params: Any) -> None:
    err = refused(task, params)
    assert (err.field, err.reason) == (field, f"is required for task {task}")


# --- summarize


def test_summarize() -> None:
    assert validate("summarize", None) == {}
    assert validate("summarize", {}) == {}
    assert validate("summarize", {"focus": "  the budget \n"}) == {"focus": "the budget"}
    assert validate("summarize", {"focus": "   "}) == {}
    assert validate("summarize", {"focus": None}) == {}
    assert validate("summarize", {"focus": "é" * 2000}) == {"focus": "é" * 2000}


@pytest.mark.parametrize(
    ("focus", "reason"),
    [
        (3, "must be a string, not a number"),
        (["a"], "must be a string, not an array"),
        ({"a": 1}, "must be a string, not an object"),
        (True, "must be a string, not a boolean"),
        ("x" * 2001, "is 2,001 characters long; the limit is 2,000"),
        ("a\x00b", "must not contain NUL characters"),
        ("a\ud800b", "must not contain lone surrogates (invalid Unicode)"),
    ],
)
def test_bad_focus(focus: Any, reason: str) -> None:
    err = refused("summarize", {"focus": focus})
    assert (err.field, err.reason) == ("focus", reason)


# --- ask


def test_ask_normalizes() -> None:
    params = {"questions": (" Who wrote it? ", "When?\nAnd where?")}
    assert validate("ask", params) == {"questions": ["Who wrote it?", "When?\nAnd where?"]}
    assert len(validate("ask", {"questions": ["q"] * 50})["questions"]) == 50


@pytest.mark.parametrize(
    ("questions", "field", "reason"),
    [
        ("What is it?", "questions", "must be a non-empty list of strings"),
        ([], "questions", "must be a non-empty list of strings"),
        (None, "questions", "must be a non-empty list of strings"),
        ({"q": 1}, "questions", "must be a non-empty list of strings"),
        (["q"] * 51, "questions", "has 51 items; the limit is 50"),
        (["q"] * 10**6, "questions", "has 1,000,000 items; the limit is 50"),
        (["ok", 3], "questions[1]", "must be a string, not a number"),
        (["ok", None], "questions[1]", "must be a string, not null"),
        (["ok", ["nested"]], "questions[1]", "must be a string, not an array"),
        (["  ", "ok"], "questions[0]", "must not be empty"),
        (["q" * 2001], "questions[0]", "is 2,001 characters long; the limit is 2,000"),
    ],
)
def test_bad_questions(questions: Any, field: str, reason: str) -> None:
    err = refused("ask", {"questions": questions})
    assert (err.field, err.reason) == (field, reason)


# --- classify


def test_classify_normalizes() -> None:
    assert validate("classify", {"labels": [" spam ", "ham"]}) == {"labels": ["spam", "ham"]}
    out = validate("classify", {"labels": ["a"], "instruction": " by topic "})
    assert out == {"labels": ["a"], "instruction": "by topic"}
    assert validate("classify", {"labels": ["a"], "instruction": ""}) == {"labels": ["a"]}
    labels = [f"label {i}" for i in range(200)]
    assert validate("classify", {"labels": labels})["labels"] == labels


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        ({"labels": "spam"}, "labels", "must be a non-empty list of strings"),
        ({"labels": []}, "labels", "must be a non-empty list of strings"),
        ({"labels": [f"l{i}" for i in range(201)]}, "labels", "has 201 items; the limit is 200"),
        ({"labels": ["a", ""]}, "labels[1]", "must not be empty"),
        ({"labels": ["a", 1]}, "labels[1]", "must be a string, not a number"),
        ({"labels": ["x" * 201]}, "labels[0]", "is 201 characters long; the limit is 200"),
        ({"labels": ["Spam", "ham", "SPAM"]}, "labels[2]",
         "repeats labels[0] ('Spam'); labels must differ"),
        ({"labels": ["a", "a "]}, "labels[1]", "repeats labels[0] ('a'); labels must differ"),
        ({"labels": ["one\ntwo"]}, "labels[0]",
         "must be one line, without line breaks or control characters"),
        ({"labels": ["tab\there"]}, "labels[0]",
         "must be one line, without line breaks or control characters"),
        ({"labels": ["a"], "instruction": 5}, "instruction", "must be a string, not a number"),
        ({"labels": ["a"], "instruction": "x" * 2001}, "instruction",
         "is 2,001 characters long; the limit is 2,000"),
    ],
)  # fmt: skip
def test_bad_classify(params: dict[str, Any], field: str, reason: str) -> None:
    err = refused("classify", params)
    assert (err.field, err.reason) == (field, reason)


# --- prompt


def test_prompt() -> None:
    assert validate("prompt", {"instruction": " List the dates. "}) == {
        "instruction": "List the dates."
    }
    assert validate("prompt", {"instruction": "x" * 20_000})["instruction"] == "x" * 20_000


@pytest.mark.parametrize(
    ("instruction", "reason"),
    [
        ("", "must not be empty"),
        (" \n\t ", "must not be empty"),
        (None, "must be a string, not null"),
        (["do it"], "must be a string, not an array"),
        ("x" * 20_001, "is 20,001 characters long; the limit is 20,000"),
    ],
)
def test_bad_prompt(instruction: Any, reason: str) -> None:
    err = refused("prompt", {"instruction": instruction})
    assert (err.field, err.reason) == ("instruction", reason)


# --- extract

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "born": {"type": "integer"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
    },
    "required": ["name"],
    "$defs": {"tag": {"type": "string", "maxLength": 40}},
}


def test_extract_returns_a_detached_copy() -> None:
    schema = copy.deepcopy(PERSON)
    out = validate("extract", {"schema": schema})
    assert out == {"schema": PERSON}
    schema["properties"]["name"]["type"] = "integer"
    assert out["schema"]["properties"]["name"]["type"] == "string"
    json.dumps(out)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object"},
        {"type": "object", "additionalProperties": False, "properties": {}},
        # A tree: the reference descends into the value each time round, so it ends.
        {
            "type": "object",
            "$ref": "#/$defs/node",
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                    },
                }
            },
        },
        {"type": "object", "properties": {"a": {"$ref": "#"}}},
        {"type": "object", "properties": {"a": {"$ref": "#item"}},
         "$defs": {"i": {"$anchor": "item"}}},
        {"$id": "https://example.com/person", "type": "object",
         "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "string"}}},
        {"type": "object",
         "properties": {"a/b": {"type": "string"}, "c": {"$ref": "#/properties/a~1b"}}},
        {"type": "object", "properties": {"$ref": {"type": "string"}}},
        {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}}},
        # Nested quantifiers are harmless on RE2, which output is checked with.
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}},
         "patternProperties": {"(x*)*y": {"type": "string"}}},
    ],
)  # fmt: skip
def test_good_schemas(schema: dict[str, Any]) -> None:
    assert validate("extract", {"schema": schema}) == {"schema": schema}


def _deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        node = {"type": "object", "properties": {"a": node}}
    return node


def _circular() -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    schema["properties"]["self"] = schema
    return schema


BIG = {"type": "object", "properties": {f"field_{i}": {"type": "string"} for i in range(3000)}}


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ([{"type": "object"}], "must be a JSON Schema object, not an array"),
        ("{\"type\": \"object\"}", "must be a JSON Schema object, not a string"),
        (None, "must be a JSON Schema object, not null"),
        (True, "must be a JSON Schema object, not a boolean"),
        ({"type": "nonsense"}, "is not a valid JSON Schema (draft 2020-12) at 'type'"),
        ({"type": "object", "properties": {"a": {"type": 3}}},
         "is not a valid JSON Schema (draft 2020-12) at 'properties/a/type'"),
        ({"type": "object", "required": "name"}, "is not a valid JSON Schema"),
        ({"type": "object", "minProperties": -1}, "is not a valid JSON Schema"),
        ({"type": "array", "items": {"type": "string"}}, 'must have "type": "object" at the top'),
        ({"properties": {"a": {"type": "string"}}}, 'must have "type": "object" at the top'),
        ({"type": ["object", "null"]}, 'must have "type": "object" at the top'),
        ({"type": "object", "properties": {"a": {"$ref": "https://evil.example/s.json"}}},
         "points outside the schema"),
        ({"type": "object", "$ref": "file:///etc/passwd"}, "points outside the schema"),
        ({"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}},
         "points outside the schema"),
        ({"type": "object", "properties": {"a": {"$dynamicRef": "http://x/y#meta"}}},
         "points outside the schema"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
         "does not point at a schema within it"),
        ({"type": "object", "properties": {"a": {"$ref": "#nowhere"}}},
         "does not point at a schema within it"),
        ({"type": "object", "required": ["a"], "properties": {"a": {"$ref": "#/required/0"}}},
         "does not point at a schema within it"),
        ({"type": "object", "properties": {"a": {"$id": "https://evil.example/", "$ref": "#"}}},
         'a nested "$id" is not supported'),
        ({"type": "object", "$ref": "#"}, "loop back"),
        ({"type": "object", "allOf": [{"$ref": "#/$defs/a"}],
          "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}}},
         "loop back"),
        ({"type": "object", "properties": {"x": {"$ref": "#/$defs/a"}},
          "$defs": {"a": {"$ref": "#/$defs/a"}}}, "loop back"),
        ({"type": "object", "patternProperties": {"(x)\\1": {"type": "string"}}},
         "Patterns are matched with RE2"),
        (BIG, "the limit is 64 KiB"),
        (_deep(100), "is nested more than 64 levels deep"),
        (_circular(), "is nested more than 64 levels deep"),
        ({"type": "object", "maximum": math.nan}, "must be plain JSON"),
        ({"type": "object", "default": {1, 2}}, "must be plain JSON"),
        ({"type": "object", "title": "\ud800"}, "must be plain JSON"),
        ({"type": "object", "enum": [0] * 70_000}, "is larger than 64 KiB as JSON"),
    ],
)  # fmt: skip
def test_bad_schemas(schema: Any, reason: str) -> None:
    err = refused("extract", {"schema": schema})
    assert err.field == "schema"
    assert reason in err.reason
    assert len(err.reason) < 600


def test_dry_run_params_are_valid() -> None:
    assert set(DRY_RUN_PARAMS) == set(TASK_NAMES)
    for task, params in DRY_RUN_PARAMS.items():
        assert validate(task, params) == params


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(["focus", "schema", "questions", "labels", "instruction", "type", ""])


@settings(max_examples=examples(150, 300), deadline=None)
@given(
    task=st.sampled_from(TASK_NAMES),
    params=st.none() | JSON | st.dictionaries(KEYS, JSON, max_size=3),
)
def test_anything_json_is_accepted_or_refused_with_a_task_error(task: str, params: Any) -> None:
    try:
        out = validate(task, params)
    except TaskError as err:
        assert err.field and err.reason
        return
    # Accepted: JSON-ready and stable under a second pass.
    assert json.loads(json.dumps(out)) == out
    assert validate(task, out) == out
