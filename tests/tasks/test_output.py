"""`ingestion.tasks.output.parse_output`: good answers become results, unusable ones
OutputError (with the raw text kept), and citations outside the pages warnings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.tasks.output import (
    MAX_WARNINGS,
    OutputError,
    TaskOutput,
    cited_pages,
    parse_output,
    part_text,
)
from ingestion.tasks.prompts import STAGES, Stage, page_marker, response_format
from ingestion.tasks.specs import TASK_NAMES, validate

EXTRACT = validate(
    "extract",
    {
        "schema": {
            "type": "object",
            "properties": {
                "parties": {"type": "array", "items": {"$ref": "#/$defs/party"}},
                "rent": {"type": "number"},
            },
            "required": ["parties"],
            "additionalProperties": False,
            "$defs": {
                "party": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"],
                }
            },
        }
    },
)
ASK = validate("ask", {"questions": ["Who signed?", "What is the rent?"]})
CLASSIFY = validate("classify", {"labels": ["Lease", "invoice", "memo"]})
PAGES = (10, 20)


def refused(task: str, params: dict[str, Any], raw: str, stage: Stage = "single") -> str:
    with pytest.raises(OutputError) as info:
        parse_output(task, params, stage, raw, PAGES)
    assert info.value.raw == raw
    assert str(info.value) == info.value.reason
    return info.value.reason


def answers(*items: tuple[str, Any]) -> str:
    return json.dumps({"answers": [{"question": "q", "answer": a, "pages": p} for a, p in items]})


# --- citations


@pytest.mark.parametrize(
    ("text", "pages"),
    [
        ("[page 12]", [12]),
        ("[p. 12]", [12]),
        ("[p.12] and [P. 3]", [12]),
        ("see p. 7, then p.8", [7, 8]),
        ("[pp. 3-5]", [3, 5]),
        ("[pages 3, 4 and 9]", [3, 4, 9]),
        ("[pages 3\u20135]", [3, 5]),
        ("pp. 11-14", [11, 14]),
        ("step. 5, app. 6, 3p. 4, page 5, (p 5)", []),
        ("[p. 2][p. 3]", [2, 3]),
        (page_marker(40) + "text", [40]),
        ("[p. " + "9" * 5000 + "]", []),
    ],
)
def test_citations(text: str, pages: list[int]) -> None:
    assert list(cited_pages(text)) == pages


# --- summarize and prompt


@pytest.mark.parametrize("task", ["summarize", "prompt"])
@pytest.mark.parametrize("stage", STAGES)
def test_free_text(task: str, stage: Stage) -> None:
    params = validate(task, {"instruction": "Do it."} if task == "prompt" else {})
    out = parse_output(task, params, stage, "\n  Rent rises [p. 12] (p. 20).  \n", PAGES)
    assert out == TaskOutput("Rent rises [p. 12] (p. 20).", None, ())
    assert refused(task, params, "  \n ", stage) == "the answer is empty"
    out = parse_output(task, params, stage, "A [p. 9], B [page 21], C p. 12, D [pp. 19-30]", PAGES)
    assert out.text == "A [p. 9], B [page 21], C p. 12, D [pp. 19-30]"
    assert out.warnings == ("cites pages 9, 21, 30, outside pages 10-20",)
    one = parse_output(task, params, stage, "X [p. 2]", (5, 5))
    assert one.warnings == ("cites page 2, outside page 5",)


def test_a_flood_of_bad_citations_is_one_short_warning() -> None:
    raw = " ".join(f"[p. {n}]" for n in range(1000, 50_000))
    out = parse_output("summarize", {}, "single", raw, PAGES)
    assert len(out.warnings) == 1 and len(out.warnings[0]) < 200
    assert out.warnings[0].endswith("and 48990 more, outside pages 10-20")


# --- extract


def test_extract_accepts_valid_objects() -> None:
    good = {"parties": [{"name": "Ada"}, {"name": "Bob"}], "rent": 900}
    for raw in (
        json.dumps(good),
        f"```json\n{json.dumps(good, indent=2)}\n```",
        f"```\n{json.dumps(good)}```",
    ):
        out = parse_output("extract", EXTRACT, "map", raw, PAGES)
        assert out == TaskOutput(None, good, ())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "the answer is not valid JSON"),
        ("The rent is 900.", "the answer is not valid JSON"),
        ('{"parties": []', "the answer is not valid JSON"),
        ('{"parties": [], "rent": NaN}', "the answer is not valid JSON (NaN is not JSON)"),
        ('{"parties": []} trailing', "the answer is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "the answer is not valid JSON"),
        ("[]", "the answer is not a JSON object"),
        ('"text"', "the answer is not a JSON object"),
        ("{}", "the answer does not match the schema: 'parties' is a required property"),
        ('{"parties": [{"name": 3}]}',
         "the answer does not match the schema at 'parties/0/name': 3 is not of type 'string'"),
        ('{"parties": [], "tenant": "x"}', "the answer does not match the schema"),
        ('{"parties": [], "rent": "900"}', "the answer does not match the schema at 'rent'"),
    ],
)  # fmt: skip
def test_extract_refuses(raw: str, reason: str) -> None:
    assert refused("extract", EXTRACT, raw).startswith(reason)


def test_extract_with_a_recursive_schema() -> None:
    tree = validate(
        "extract",
        {
            "schema": {
                "type": "object",
                "properties": {"root": {"$ref": "#/$defs/node"}},
                "$defs": {
                    "node": {
                        "type": "object",
                        "properties": {
                            "title": {"type": "string"},
                            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                        },
                    }
                },
            }
        },
    )
    value = {"root": {"title": "1", "children": [{"title": "1.1", "children": []}]}}
    assert parse_output("extract", tree, "reduce", json.dumps(value), PAGES).data == value
    bad = {"root": {"children": [{"title": 5}]}}
    assert "at 'root/children/0/title'" in refused("extract", tree, json.dumps(bad))


# --- ask


def test_ask_accepts_answers_in_range() -> None:
    raw = json.dumps(
        {
            "answers": [
                {"question": "who?", "answer": " Ada signed it [p. 12]. ", "pages": [12, 12]},
                {"question": "What is the rent?", "answer": "not found", "pages": []},
            ]
        }
    )
    out = parse_output("ask", ASK, "single", raw, PAGES)
    assert out.warnings == ()
    assert out.data == {
        "answers": [
            # The questions are the client's, whatever the model echoed.
            {"question": "Who signed?", "answer": "Ada signed it [p. 12].", "pages": [12],
             "invalid_pages": []},
            {"question": "What is the rent?", "answer": "not found", "pages": [],
             "invalid_pages": []},
        ]
    }  # fmt: skip
    assert out.text == (
        "1. Who signed?\nAda signed it [p. 12].\n(pages 12)\n\n2. What is the rent?\nnot found"
    )


def test_ask_drops_citations_outside_the_pages() -> None:
    raw = answers(
        ("Ada [p. 12], see also [p. 3] and p. 25", [25, 12, 0, -1, 99]),
        ("900 [p. 15]", []),
    )
    out = parse_output("ask", ASK, "map", raw, PAGES)
    assert out.data is not None
    first, second = out.data["answers"]
    assert first["pages"] == [12]
    assert first["invalid_pages"] == [-1, 0, 3, 25, 99]
    assert first["answer"] == "Ada [p. 12], see also [p. 3] and p. 25"  # the text is kept
    # A page the text cites in range joins "pages".
    assert (second["pages"], second["invalid_pages"]) == ([15], [])
    assert out.warnings == (
        "answer 1 lists pages -1, 0, 25, 99, outside pages 10-20: dropped",
        "answer 1 cites pages 3, 25, outside pages 10-20",
    )


def test_ask_warnings_are_capped() -> None:
    many = validate("ask", {"questions": [f"q{i}" for i in range(50)]})
    raw = answers(*[("x [p. 1]", [2])] * 50)
    out = parse_output("ask", many, "single", raw, PAGES)
    assert len(out.warnings) == MAX_WARNINGS
    assert out.warnings[-1] == f"and {100 - MAX_WARNINGS + 1} more warnings"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("Ada signed it.", "the answer is not valid JSON"),
        ("[]", 'the answer is not a JSON object {"answers": [...]}'),
        ('{"answers": {}}', 'the answer is not a JSON object {"answers": [...]}'),
        ('{"answer": []}', 'the answer is not a JSON object {"answers": [...]}'),
        (answers(("Ada", [12])), "expected 2 answers, got 1"),
        (answers(("a", []), ("b", []), ("c", [])), "expected 2 answers, got 3"),
        ('{"answers": [1, 2]}', 'answer 1 is not an object with an "answer" string'),
        (json.dumps({"answers": [{"answer": "a"}, {"answer": None}]}),
         'answer 2 is not an object with an "answer" string'),
        (answers(("a", ["12"]), ("b", [])), 'answer 1: "pages" is not a list of page numbers'),
        (answers(("a", [True]), ("b", [])), 'answer 1: "pages" is not a list of page numbers'),
        (answers(("a", [12.0]), ("b", [])), 'answer 1: "pages" is not a list of page numbers'),
        (answers(("a", []), ("b", 12)), 'answer 2: "pages" is not a list of page numbers'),
    ],
)  # fmt: skip
def test_ask_refuses(raw: str, reason: str) -> None:
    assert refused("ask", ASK, raw).startswith(reason)


# --- classify


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ('{"reason": "A lease [p. 11].", "label": "Lease"}', "Lease"),
        ('{"reason": "A lease.", "label": "lease"}', "Lease"),
        ('{"reason": "Bill.", "label": " INVOICE "}', "invoice"),
        ('{"label": "memo"}', "memo"),
        ("memo", "memo"),
        ('"Lease".', "Lease"),
        ("**INVOICE**", "invoice"),
    ],
)
def test_classify_accepts_labels(raw: str, label: str) -> None:
    out = parse_output("classify", CLASSIFY, "reduce", raw, PAGES)
    assert out.text == label
    assert out.data is not None and out.data["label"] == label
    assert set(out.data) == {"label", "reason"}
    assert out.warnings == ()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"reason": "x", "label": "contract"}', "label 'contract' is not one of the labels"),
        ('{"reason": "x", "label": "Leases"}', "label 'Leases' is not one of the labels"),
        ('{"reason": "x"}', 'the answer is not a JSON object with a "label" string'),
        ('{"reason": "x", "label": 1}', 'the answer is not a JSON object with a "label" string'),
        ('["Lease"]', 'the answer is not a JSON object with a "label" string'),
        ('{"reason": 5, "label": "memo"}', '"reason" is not a string'),
        ("It is probably a lease.", "the answer is not valid JSON"),
        ("", "the answer is not valid JSON"),
    ],
)
def test_classify_refuses(raw: str, reason: str) -> None:
    assert refused("classify", CLASSIFY, raw).startswith(reason)


def test_classify_reason_citations_are_checked() -> None:
    raw = '{"reason": "Rent on [p. 9] and [p. 15].", "label": "Lease"}'
    out = parse_output("classify", CLASSIFY, "single", raw, PAGES)
    assert out.warnings == ("the reason cites page 9, outside pages 10-20",)
    assert out.data == {"label": "Lease", "reason": "Rent on [p. 9] and [p. 15]."}


# --- everything


@pytest.mark.parametrize("pages", [(0, 3), (5, 4), (-1, -1)])
def test_bad_page_ranges_are_a_caller_bug(pages: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="pages must be"):
        parse_output("summarize", {}, "single", "x", pages)


def test_unknown_task_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        parse_output("translate", {}, "single", "x", PAGES)


def test_part_text() -> None:
    ask = parse_output("ask", ASK, "map", answers(("Ada [p. 12]", [12, 99]), ("no", [])), PAGES)
    shown = json.loads(part_text("ask", ask))
    assert shown == {
        "answers": [
            {"question": "Who signed?", "answer": "Ada [p. 12]", "pages": [12]},
            {"question": "What is the rent?", "answer": "no", "pages": []},
        ]
    }
    extract = parse_output("extract", EXTRACT, "map", '{"parties": []}', PAGES)
    assert json.loads(part_text("extract", extract)) == {"parties": []}
    summary = parse_output("summarize", {}, "map", " S [p. 11] ", PAGES)
    assert part_text("summarize", summary) == "S [p. 11]"


VALID = {
    "summarize": {},
    "extract": EXTRACT,
    "ask": ASK,
    "classify": CLASSIFY,
    "prompt": {"instruction": "x"},
}


@settings(max_examples=200, deadline=None)
@given(task=st.sampled_from(TASK_NAMES), raw=st.text(max_size=300) | st.from_regex(r"\{.*\}"))
def test_any_text_is_a_result_or_an_output_error(task: str, raw: str) -> None:
    try:
        out = parse_output(task, VALID[task], "single", raw, PAGES)
    except OutputError as err:
        assert err.raw == raw and err.reason
        return
    assert out.text is not None or out.data is not None
    json.dumps(out.data)


ANSWER = st.fixed_dictionaries(
    {
        "question": st.text(max_size=20),
        "answer": st.text(max_size=60) | st.from_regex(r"[a-z ]*\[p\. [0-9]{1,3}\][a-z ]*"),
        "pages": st.lists(st.integers(-5, 40), max_size=6),
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ANSWER, min_size=2, max_size=2), st.sampled_from(STAGES))
def test_ask_answers_that_match_the_format_parse(items: list[dict[str, Any]], stage: Stage) -> None:
    fmt = response_format("ask", ASK, stage)
    assert fmt is not None
    out = parse_output("ask", ASK, stage, json.dumps({"answers": items}), PAGES)
    assert out.data is not None
    for item, parsed in zip(items, out.data["answers"], strict=True):
        assert all(10 <= p <= 20 for p in parsed["pages"])
        assert set(parsed["invalid_pages"]) == {
            p for p in [*item["pages"], *cited_pages(item["answer"])] if not 10 <= p <= 20
        }
        assert {p for p in item["pages"] if 10 <= p <= 20} <= set(parsed["pages"])
