"""`longdoc route` end to end through typer's CliRunner, on real corpus files and the
real tokenizers, with no server and no database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingestion.capacity.kv import reserve
from ingestion.capacity.registry import get_model
from ingestion.capacity.route_plan import Plan
from service.cli.app import cli
from tests.routing.conftest import corpus_path, counter_for, parse

GEMMA = "google/gemma-4-31B-it"
runner = CliRunner()


def route(*args: str, deployment: list[dict[str, object]] | None = None) -> tuple[int, str, str]:
    env = {"LONGDOC_DEPLOYMENT": json.dumps(deployment)} if deployment is not None else {}
    result = runner.invoke(cli, ["route", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def _tokenizers() -> None:
    counter_for("gemma"), counter_for("scout")  # skip when the files are missing


def test_json_plan_for_a_real_pdf() -> None:
    pdf = corpus_path("pdf/r-intro.pdf")
    code, out, err = route(str(pdf), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["media_type"], data["pages"], data["task"]) == (
        "application/pdf",
        113,
        "summarize",
    )
    plan = Plan.from_json(data["plan"])
    assert plan.kind == "single" and plan.request is not None
    req = plan.request
    assert (req.role, req.model, req.output_tokens, req.replicas) == (
        "gemma",
        GEMMA,
        4096,
        ("gemma-0",),
    )
    text = parse("pdf/r-intro.pdf")[0].decode("utf-8")
    doc = {d.role: d for d in plan.document}
    assert doc["gemma"].exact and doc["gemma"].count == counter_for("gemma").count(text)
    assert doc["scout"].exact and doc["scout"].count == counter_for("scout").count(text)
    assert req.input_tokens == doc["gemma"].count + dict(plan.prompt_tokens)["gemma"]
    assert req.kv_bytes == reserve(get_model(GEMMA), req.total_tokens).bytes_per_request


def test_human_output_names_the_model_and_the_kv() -> None:
    pdf = corpus_path("pdf/r-intro.pdf")
    code, out, _ = route(str(pdf), "--task", "ask", "--max-output-tokens", "1000")
    assert code == 0
    assert "task ask" in out
    assert "plan: single request on gemma (google/gemma-4-31B-it)" in out
    assert "GiB" in out and "reasons:" in out
    # What it planned against, and whose tokenizers counted.
    assert "deployment: default (the paper deployment)" in out
    assert f"  gemma: {GEMMA} x1, TP 1, context 262,144" in out
    for role in ("gemma", "scout"):
        model = counter_for(role).model
        assert model, f"{role}: the tokenizer file names no model (SOURCE.json)"
        assert f"{model}'s tokenizer" in out


def test_a_small_deployment_gives_a_map_reduce_plan() -> None:
    pdf = corpus_path("pdf/r-intro.pdf")
    small = [
        {"role": "gemma", "model": GEMMA, "max_model_len": 32_768, "kv_cache_bytes": 20 * 2**30}
    ]
    code, out, err = route(str(pdf), "--json", deployment=small)
    assert code == 0, err
    data = json.loads(out)
    assert data["deployment"]["source"] == "LONGDOC_DEPLOYMENT"
    (replica,) = data["deployment"]["replicas"]
    assert {k: replica[k] for k in small[0]} == small[0]
    plan = Plan.from_json(data["plan"])
    assert plan.kind == "map_reduce" and len(plan.map) >= 3
    assert all(r.total_tokens <= 32_768 for r in plan.requests())
    assert plan.rejected[0].reason.startswith("gemma: ")
    code, out, _ = route(str(pdf), deployment=small)
    assert code == 0 and "plan: map-reduce" in out and "reduce L1" in out
    assert "deployment: LONGDOC_DEPLOYMENT" in out and "context 32,768" in out


def test_unreadable_and_unsupported_files_exit_2(tmp_path: Path) -> None:
    binary = tmp_path / "noise.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    for path, reason in [
        (binary, "supported formats"),
        (empty, "empty"),
        (tmp_path / "missing.pdf", "No such file"),
        (tmp_path, "Is a directory"),
    ]:
        code, _, err = route(str(path))
        assert code == 2, path
        assert reason in err


@pytest.mark.parametrize("budget", ["0", "-5", "1000000"])
def test_absurd_output_budgets_exit_2(budget: str) -> None:
    pdf = corpus_path("pdf/r-intro.pdf")
    code, _, err = route(str(pdf), "--max-output-tokens", budget)
    assert code == 2 and "max_output_tokens" in err


def test_a_budget_over_the_service_limit_exits_2() -> None:
    # Within the paper deployment's context, but the API would refuse the job (a 422).
    code, _, err = route(str(corpus_path("pdf/r-intro.pdf")), "--max-output-tokens", "200000")
    assert code == 2 and "above this service's limit of 131,072" in err


def test_refusals_exit_1_with_the_reason(tmp_path: Path) -> None:
    # 40,000 characters and no line break: the text reader cuts it into pages at spaces,
    # and no page has a paragraph or line break left to cut at.
    one_line = tmp_path / "one-line.txt"
    one_line.write_text(" ".join(f"word{i}" for i in range(5_000)))
    tiny = [{"role": "gemma", "model": GEMMA, "max_model_len": 600, "kv_cache_bytes": 2**34}]
    code, _, err = route(str(one_line), "--max-output-tokens", "100", deployment=tiny)
    assert code == 1
    assert "refused (unsplittable): page 1 holds a line of" in err
    assert "rejected: gemma: " in err
    # The prompt alone (instructions, and a marker for each of 113 pages) is over 600.
    r_intro = str(corpus_path("pdf/r-intro.pdf"))
    code, _, err = route(r_intro, "--max-output-tokens", "400", deployment=tiny)
    assert code == 1 and "refused (unsplittable)" in err and "leaves -" in err
    # Chunks fit, but no request can combine two answers of 400 tokens.
    small = [{**tiny[0], "max_model_len": 2_000}]
    code, _, err = route(r_intro, "--max-output-tokens", "400", deployment=small)
    assert code == 1 and "refused (reduce_too_large)" in err


def test_a_page_range_is_planned_on_those_pages_alone() -> None:
    pdf = corpus_path("pdf/r-intro.pdf")
    code, out, err = route(str(pdf), "--pages", "30-34", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["pages"], data["page_range"]) == (113, "30-34")
    plan = Plan.from_json(data["plan"])
    data_bytes, pages = parse("pdf/r-intro.pdf")
    spans = {s.number: s for s, _ in pages}
    text = data_bytes[spans[30].byte_start : spans[34].byte_end].decode("utf-8")
    doc = {d.role: d for d in plan.document}
    for role in ("gemma", "scout"):
        assert doc[role].exact and doc[role].count == counter_for(role).count(text)
    code, out, _ = route(str(pdf), "--pages", "30-34")
    assert code == 0 and "113 pages, only pages 30-34" in out


@pytest.mark.parametrize(
    ("pages", "why"),
    [("0-3", "numbered from 1"), ("1-3,7", "one range only"), ("100-200", "it has 113 pages")],
)
def test_a_bad_page_range_exits_2(pages: str, why: str) -> None:
    code, _, err = route(str(corpus_path("pdf/r-intro.pdf")), "--pages", pages)
    assert code == 2 and "--pages" in err and why in err, err


@pytest.mark.usefixtures("tesseract")
def test_a_scan_is_planned_on_its_ocr_text_unless_ocr_is_off() -> None:
    scan = str(corpus_path("pdf-scanned/ocrmypdf-jbig2.pdf"))  # one image-only page

    def gemma_tokens(*args: str) -> tuple[int, str]:
        code, out, err = route(scan, "--json", *args)
        assert code == 0, err
        doc = {d.role: d for d in Plan.from_json(json.loads(out)["plan"]).document}
        return doc["gemma"].count, err

    read, said = gemma_tokens("--ocr-languages", "eng")
    assert read > 200 and "1 page(s) read by OCR" in said
    off, quiet = gemma_tokens("--ocr", "off")
    assert off == 0 and "OCR" not in quiet
    code, _, err = route(scan, "--ocr-languages", "xyz")
    assert code == 2 and "--ocr-languages" in err and "xyz" in err
