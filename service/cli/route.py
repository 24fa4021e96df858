"""`longdoc route FILE`: the plan a job on FILE would get, with no server and no database.

The document is parsed and counted here with the local tokenizer files
(settings.tokenizers) and planned by the service's own planner
(`service.jobs.planner.plan_job`, page markers and the reduce prompt included) against
the deployment described in settings (settings.deployment, by default the paper
deployment) in place of the measured backends.
"""

from __future__ import annotations

import io
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ingestion.capacity.route_plan import Plan, Request, RouteRefused
from ingestion.documents.formats import detect_media_type_path
from ingestion.documents.ocr import OcrMode, OcrOptions, was_recognised
from ingestion.documents.page_range import PageRange, PageRangeError, parse_pages
from ingestion.documents.parse import open_document
from ingestion.documents.textfile import PageSpan, write_pages
from ingestion.tasks.specs import DRY_RUN_PARAMS, TASK_NAMES, TaskError, validate
from ingestion.tokens.counting import TokenCounter, count_stream, estimate_tokens, load_counter
from ingestion.types import IngestError, TokenCount
from service.cli.options import OcrLanguagesOption, OcrModeOption, settings_of
from service.config import Settings
from service.deployment import MODEL_ROLES
from service.documents import ocr_request
from service.errors import Invalid
from service.jobs.planner import DocumentText, deployment_backends, plan_job
from service.ocr_options import ocr_options

GIB = 1 << 30


# The --task choices; a StrEnum is what typer turns into a checked option.
Task = StrEnum("Task", [(name, name) for name in TASK_NAMES])  # type: ignore[misc]
DEFAULT_TASK = Task("summarize")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"longdoc route: {message}", err=True)
    return typer.Exit(code=code)


def deployment_summary(settings: Settings) -> dict[str, object]:
    """What a dry run plans against, and where that came from: a plan is only as true
    as the deployment it assumed."""
    from service import stack

    servers = stack.active(settings.vllm_stack, settings.stack_profiles)
    if servers and settings.deployment == stack.deployment(servers):
        source = f"the compose stack (LONGDOC_VLLM_STACK, profiles {settings.stack_profiles})"
    elif "deployment" in settings.model_fields_set:
        source = "LONGDOC_DEPLOYMENT"
    else:
        source = "default (the paper deployment)"
    return {"source": source, "replicas": [r.model_dump() for r in settings.deployment]}


def _deployment_lines(summary: dict[str, object]) -> list[str]:
    lines = [f"deployment: {summary['source']}"]
    for r in summary["replicas"]:  # type: ignore[attr-defined]
        kv = "unknown" if r["kv_cache_bytes"] is None else f"{r['kv_cache_bytes'] / GIB:.2f} GiB"
        lines.append(
            f"  {r['role']}: {r['model']} x{r['replicas']}, TP {r['tp']}, context "
            f"{r['max_model_len']:,}, KV pool {kv} per GPU ({r['kv_dtype']})"
        )
    return lines


def _counter(role: str, path: Path | None) -> TokenCounter | None:
    if path is None:
        return None
    try:
        return load_counter(path)
    except ValueError as exc:
        # Still a plan, on an estimate marked inexact; splitting that role is refused.
        typer.echo(f"longdoc route: {role}: {exc}; counting by estimate", err=True)
        return None


def _read(
    path: Path, max_pages: int, ocr_options: OcrOptions
) -> tuple[str, str, list[tuple[PageSpan, str]]]:
    media_type = detect_media_type_path(path)
    buf = io.BytesIO()
    # Scanned pages are OCR'd here as the worker would (in this process, one after the
    # other): without it a scan would plan as the few tokens of its text layer.
    with open_document(path, media_type, max_pages=max_pages, ocr_options=ocr_options) as doc:
        spans = write_pages(doc.pages(), buf)
    recognised = sum(was_recognised(s.warnings) for s in spans)
    if recognised:
        typer.echo(f"longdoc route: {recognised} page(s) read by OCR", err=True)
    text = buf.getvalue().decode("utf-8")
    return media_type, text, [(s, text[s.char_start : s.char_end]) for s in spans]


def _ocr(settings: Settings, mode: OcrMode | None, languages: str | None) -> OcrOptions:
    try:
        asked = ocr_request(mode, languages)  # checked as an upload's are
    except Invalid as exc:
        raise _fail(f"--ocr-languages: {exc.reason}") from None
    return ocr_options(settings, asked.mode, asked.languages)


def _params(task: str, raw: str | None) -> dict[str, Any]:
    # A dry run with no parameters budgets plausible ones; given ones are checked as
    # the API checks a job's.
    try:
        return validate(task, DRY_RUN_PARAMS[task] if raw is None else json.loads(raw))
    except json.JSONDecodeError as exc:
        raise _fail(f"--params is not JSON: {exc}") from None
    except TaskError as exc:
        raise _fail(f"--params: {exc.field}: {exc.reason}") from None


def _pages(spec: str | None) -> PageRange | None:
    try:
        return None if spec is None else parse_pages(spec)
    except PageRangeError as exc:
        raise _fail(f"--pages: {exc}") from None


def _counted(
    text: str, page_texts: list[tuple[PageSpan, str]], settings: Settings
) -> tuple[DocumentText, dict[str, TokenCounter]]:
    """The document as the planner takes it, counted as ingest counts it."""
    counters: dict[str, TokenCounter] = {}
    counts: dict[str, TokenCount] = {}
    for role in MODEL_ROLES:
        counter = _counter(role, settings.tokenizers.get(role))
        if counter is None:
            counts[role] = estimate_tokens(len(text))
        else:
            counters[role] = counter
            counts[role] = count_stream(counter, [text])

    def read(first: int, last: int) -> list[tuple[PageSpan, str]]:
        return [(s, t) for s, t in page_texts if first <= s.number <= last]

    return DocumentText(counts, [span for span, _ in page_texts], read), counters


def route(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The document (PDF, EPUB, DOCX, HTML, text...).")],
    task: Annotated[Task, typer.Option("--task", help="What the job will do.")] = DEFAULT_TASK,
    params: Annotated[
        str | None,
        typer.Option(
            "--params",
            help="The job's params as JSON (as POST /v1/jobs takes them); by default "
            "plausible ones for the task.",
        ),
    ] = None,
    max_output_tokens: Annotated[
        int, typer.Option("--max-output-tokens", help="Output budget per request.")
    ] = 4096,
    pages: Annotated[
        str | None,
        typer.Option(
            "--pages", help='Only these pages, as POST /v1/jobs takes them: "7", "30-45".'
        ),
    ] = None,
    ocr: OcrModeOption = None,
    ocr_languages: OcrLanguagesOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which model a job on FILE runs on, the KV it reserves, and why (no server needed)."""
    settings = settings_of(ctx)
    task_params = _params(task, params)
    wanted = _pages(pages)
    options = _ocr(settings, ocr, ocr_languages)
    try:
        media_type, text, page_texts = _read(file, settings.max_pages, options)
    except IngestError as exc:
        raise _fail(f"{file}: {exc.reason}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{file}: cannot read it ({exc})") from None
    doc, counters = _counted(text, page_texts, settings)
    if wanted is not None:
        try:
            wanted.check_within(len(page_texts))
        except PageRangeError as exc:
            raise _fail(f"--pages: {exc}") from None
    try:
        backends = deployment_backends(settings.deployment)
        plan = plan_job(
            doc, task, task_params, max_output_tokens, backends, counters, settings, pages=wanted
        ).plan
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except RouteRefused as exc:
        typer.echo(f"longdoc route: refused ({exc.code}): {exc.reason}", err=True)
        for r in exc.rejected:
            typer.echo(f"  rejected: {r.reason}", err=True)
        raise typer.Exit(code=1) from None
    deployment = deployment_summary(settings)
    if json_out:
        head = {"file": str(file), "media_type": media_type, "pages": len(page_texts)}
        head |= {"task": task, "page_range": None if wanted is None else str(wanted)}
        body = {**head, "params": task_params, "deployment": deployment, "plan": plan.to_json()}
        typer.echo(json.dumps(body, indent=2))
        return
    only = "" if wanted is None else f", only pages {wanted}"
    typer.echo(f"{file}: {media_type}, {len(page_texts):,} pages{only}, task {task.value}")
    for line in _deployment_lines(deployment):
        typer.echo(line)
    _print_plan(plan)


def _req_line(req: Request) -> str:
    return (
        f"{req.role} ({req.model}): {req.input_tokens:,} in + {req.output_tokens:,} out = "
        f"{req.total_tokens:,} tokens, KV {req.kv_bytes / GIB:.2f} GiB ({req.kv_blocks:,} "
        f"blocks)"
    )


def _print_plan(plan: Plan) -> None:  # noqa: C901
    prompts = dict(plan.prompt_tokens)
    for d in plan.document:
        exact = "exact" if d.exact else "ESTIMATE"
        whose = f", {d.model}'s tokenizer" if d.model else ""
        typer.echo(
            f"tokens for {d.role}: {d.count:,} ({exact}{whose}) + {prompts[d.role]:,} task prompt"
        )
    if plan.request is not None:
        typer.echo(f"plan: single request on {_req_line(plan.request)}")
        typer.echo(f"  replicas that hold it: {', '.join(plan.request.replicas)}")
    else:
        typer.echo(f"plan: map-reduce, {len(plan.map)} map requests")
        for step in plan.map[:20]:
            c = step.chunk
            where = f"pages {c.first_page}-{c.last_page}"
            if c.parts:
                where += f" (part {c.part}/{c.parts})"
            typer.echo(f"  chunk {c.index}: {where}: {_req_line(step.request)}")
        if len(plan.map) > 20:
            typer.echo(f"  ... {len(plan.map) - 20} more chunks")
        for level in plan.reduce:
            for g in level.groups:
                typer.echo(f"  reduce L{level.level} of {g.first}-{g.last}: {_req_line(g.request)}")
    typer.echo("reasons:")
    for reason in plan.reasons:
        typer.echo(f"  - {reason}")
    if plan.rejected:
        typer.echo("rejected:")
        for r in plan.rejected:
            typer.echo(f"  - {r.reason}")
