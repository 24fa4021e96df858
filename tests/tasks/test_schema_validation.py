"""Extract schemas cost bounded time: what a schema expands to is refused over a limit
at submission, and the model's answer is checked with a step budget, RE2 patterns and
hashed uniqueItems, so no schema and no answer can hold a worker (and its KV lease)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from ingestion.tasks.output import OutputError, parse_output
from ingestion.tasks.schema import SCHEMA_EXPANSION, expansion
from ingestion.tasks.specs import TaskError, validate
from ingestion.tasks.validation import VALIDATION_STEPS, ValidationBudgetExceeded, first_error
from tests.examples import examples


def chain(depth: int, keyword: str = "anyOf") -> dict[str, Any]:
    """Each level a choice between two references to the next: 3 bytes of JSON more per
    level, twice the subschemas."""
    defs: dict[str, Any] = {
        f"d{i}": {keyword: [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(depth)
    }
    defs[f"d{depth}"] = {"type": "string"}
    return {"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}, "$defs": defs}


def chain_size(depth: int) -> int:
    # A level: its anyOf node and two reference nodes, each a copy of the next level.
    level = 1  # the last level, {"type": "string"}
    for _ in range(depth):
        level = 1 + 2 * (1 + level)
    return 1 + 1 + level  # the top, and the reference under "x"


@pytest.mark.parametrize("depth", [0, 1, 5, 11])
def test_expansion_counts_every_reference_as_a_copy_of_its_target(depth: int) -> None:
    schema = chain(depth)
    targets = {f"#/$defs/d{i}": schema["$defs"][f"d{i}"] for i in range(depth + 1)}
    assert expansion(schema, targets) == chain_size(depth)


@pytest.mark.parametrize("keyword", ["anyOf", "oneOf", "allOf"])
@pytest.mark.timeout(60)
def test_forty_shared_levels_are_refused_with_the_limit(keyword: str) -> None:
    schema = chain(40, keyword)
    assert len(json.dumps(schema)) < 3_000
    with pytest.raises(TaskError) as info:
        validate("extract", {"schema": schema})
    assert info.value.field == "schema"
    assert f"the limit is {SCHEMA_EXPANSION:,}" in info.value.reason


def test_the_largest_allowed_chain_is_checked_to_a_verdict() -> None:
    depth = max(d for d in range(40) if chain_size(d) <= SCHEMA_EXPANSION)
    params = validate("extract", {"schema": chain(depth)})
    error = first_error(params["schema"], {"x": 1})
    assert error is not None and error.validator == "anyOf"
    assert first_error(params["schema"], {"x": "text"}) is None
    # The next level is refused: the limit is where the count says.
    with pytest.raises(TaskError):
        validate("extract", {"schema": chain(depth + 1)})


def _nested(levels: int, leaf: object) -> object:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


# Recursion that descends into the answer is allowed (a tree), and sized for one level;
# with a two-way choice at each level, an answer n levels deep that fails at the bottom
# is checked 2**n times over unless the budget stops it.
FORKED_TREE: dict[str, Any] = {
    "type": "object",
    "properties": {"root": {"$ref": "#/$defs/n"}},
    "$defs": {
        "n": {
            "anyOf": [
                {"type": "array", "items": {"$ref": "#/$defs/n"}},
                {"type": "array", "items": {"$ref": "#/$defs/n"}},
            ]
        }
    },
}


@pytest.mark.timeout(60)
def test_an_answer_over_the_step_budget_is_refused_not_checked_forever() -> None:
    params = validate("extract", {"schema": FORKED_TREE})
    answer = json.dumps({"root": _nested(40, 1)})
    with pytest.raises(ValidationBudgetExceeded):
        first_error(params["schema"], json.loads(answer), steps=1_000)
    with pytest.raises(OutputError) as info:
        parse_output("extract", params, "single", answer, (1, 1))
    assert info.value.reason == (
        f"the answer is too large to check against the schema (over {VALIDATION_STEPS:,} "
        "validation steps)"
    )
    assert info.value.raw == answer
    # A shallow answer of the same shape is checked to its verdict.
    assert first_error(params["schema"], {"root": _nested(5, [])}) is None
    assert first_error(params["schema"], {"root": _nested(5, 1)}) is not None


HOSTILE = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^(a|aa)+$"}},
    "patternProperties": {"^(x+x+)+y$": {"type": "integer"}},
    "additionalProperties": False,
}


@pytest.mark.timeout(60)
def test_a_hostile_string_against_an_allowed_pattern_gets_its_verdict() -> None:
    params = validate("extract", {"schema": HOSTILE})
    assert params == {"schema": HOSTILE}
    # Python's re backtracks through 2**n ways to split the a's before failing on "b".
    bad = first_error(params["schema"], {"code": "a" * 5_000 + "b"})
    assert bad is not None and bad.validator == "pattern"
    assert first_error(params["schema"], {"code": "a" * 5_000}) is None
    key = "x" * 60
    extra = first_error(params["schema"], {key: 1})  # no "y": not a pattern property
    assert extra is not None and extra.validator == "additionalProperties"
    assert first_error(params["schema"], {key + "y": 1}) is None
    typed = first_error(params["schema"], {key + "y": "one"})
    assert typed is not None and typed.validator == "type"
    raw = json.dumps({"code": "a" * 5_000 + "b"})
    with pytest.raises(OutputError) as info:
        parse_output("extract", params, "single", raw, (1, 1))
    assert info.value.reason.startswith("the answer does not match the schema at 'code'")


@pytest.mark.timeout(60)
def test_unique_items_over_many_objects_is_hashed_not_compared_pairwise() -> None:
    schema = {"type": "object", "properties": {"rows": {"type": "array", "uniqueItems": True}}}
    params = validate("extract", {"schema": schema})
    rows: list[Any] = [{"id": i, "tags": [i % 7]} for i in range(20_000)]
    assert first_error(params["schema"], {"rows": rows}) is None
    repeated = first_error(params["schema"], {"rows": [*rows, {"tags": [3], "id": 10.0}]})
    assert repeated is not None and repeated.validator == "uniqueItems"


# Small cases where jsonschema's own verdict can be had quickly: the keywords this
# module implements must agree with it.
SAME = [
    ({"type": "string", "pattern": "b+"}, ["abbc", "ac", 3]),
    ({"type": "string", "pattern": "^[0-9]{5}$"}, ["12345", "1234", "123456"]),
    ({"pattern": "\\d"}, ["a1", "a"]),
    ({"uniqueItems": True}, [[1, 1.0], [1, True], [0, False], [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
                             [[1, 2], [2, 1]], [None, "null"], [1.5, 1.5], ["a", "b"], [],
                             [True, "T"], [[True], ["T"]], [{"a": [1, {"b": 2.0}]},
                             {"a": [1.0, {"b": 2}]}], [{"a,b": 1}, {"a": 1, "b": 1}]]),
    ({"uniqueItems": False}, [[1, 1]]),
    ({"patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": False},
     [{"x1": 1}, {"x1": "a"}, {"y": 1}, {}]),
    ({"properties": {"a": {}}, "patternProperties": {"b$": {}},
      "additionalProperties": {"type": "string"}},
     [{"a": 1, "cb": 2, "z": "s"}, {"z": 3}]),
    ({"additionalProperties": False, "properties": {"a": {}}}, [{"a": 1}, {"b": 1}, []]),
    ({"enum": [1, "a", [1]]}, [1, 1.0, "a", [1], [1.0], True, "b"]),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "values"), SAME)
def test_verdicts_match_jsonschema(schema: dict[str, Any], values: list[Any]) -> None:
    reference = Draft202012Validator(schema)
    for value in values:
        assert (first_error(schema, value) is None) == reference.is_valid(value), value


SCALARS = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from([0.0, 1.0, 1.5, -2.0])
JSON = st.recursive(
    SCALARS | st.sampled_from(["", "a", "T", "1"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "a,b"]), children, max_size=2)
    ),
    max_leaves=8,
)


@settings(max_examples=examples(150, 300), deadline=None)
@given(items=st.lists(JSON, max_size=6))
def test_unique_items_agrees_with_jsonschema_on_any_json(items: list[Any]) -> None:
    schema = {"uniqueItems": True}
    assert (first_error(schema, items) is None) == Draft202012Validator(schema).is_valid(items)


def test_classes_are_ascii_as_in_ecma_262() -> None:
    # JSON Schema patterns are ECMA-262, where \d is [0-9]; so is RE2's, not Python's.
    assert first_error({"pattern": "^\\d+$"}, "٣٤") is not None
    assert first_error({"pattern": "^\\d+$"}, "34") is None


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a)\\1$"}}},
         "pattern '^(a)\\\\1$' cannot be used: invalid escape sequence: \\1. Patterns are "
         "matched with RE2"),
        ({"type": "object", "patternProperties": {"^(?=a)": {}}}, "cannot be used"),
        # Compiled, it would hold 4 MiB: over the memory of one pattern.
        ({"type": "object", "properties": {"a": {"pattern": "|".join(
            f"x{i}[^a]{{1000}}" for i in range(40))}}}, "cannot be used: pattern too large"),
        # Only through a reference, outside "$defs": checked all the same.
        ({"type": "object", "properties": {"a": {"$ref": "#/x-defs/p"}},
          "x-defs": {"p": {"pattern": "(?<=a)b"}}}, "cannot be used"),
        ({"type": "object", "unevaluatedProperties": False}, '"unevaluatedProperties" is not'),
        ({"type": "object", "properties": {"a": {"unevaluatedItems": False}}},
         '"unevaluatedItems" is not supported'),
    ],
)  # fmt: skip
def test_schemas_output_could_not_be_checked_safely_are_refused(
    schema: dict[str, Any], reason: str
) -> None:
    with pytest.raises(TaskError) as info:
        validate("extract", {"schema": schema})
    assert info.value.field == "schema"
    assert reason in info.value.reason


def test_patterns_in_data_are_not_schema_patterns() -> None:
    # "enum" and "const" hold values: a "pattern" key there is data, not a keyword.
    schema = {"type": "object", "enum": [{"pattern": "(a)\\1"}], "const": {"pattern": "(?=x)"}}
    assert validate("extract", {"schema": schema}) == {"schema": schema}
