"""`longdoc route FILE`: the plan a job on FILE would get, with no server and no database.

The document is parsed and counted here with the local tokenizer files
(settings.tokenizers) and planned against the deployment described in settings
(settings.deployment, by default the paper deployment).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ingestion.capacity.chunking import PageChunker
from ingestion.capacity.kv import KvConfig
from ingestion.capacity.route_plan import Plan, Request, RouteRefused
from ingestion.capacity.router import Backend, Job, plan_route
from ingestion.documents.formats import detect_media_type_path
from ingestion.documents.parse import open_document
from ingestion.documents.textfile import PageSpan, write_pages
from ingestion.tasks.specs import DRY_RUN_PARAMS, TASK_NAMES, TEMPLATE_TOKENS, instruction_text
from ingestion.tokens.counting import TokenCounter, count_stream, estimate_tokens, load_counter
from ingestion.types import IngestError, TokenCount
from service.cli.options import settings_of
from service.config import MODEL_ROLES, DeploymentReplica, Settings

GIB = 1 << 30


# The --task choices; a StrEnum is what typer turns into a checked option.
Task = StrEnum("Task", [(name, name) for name in TASK_NAMES])  # type: ignore[misc]
DEFAULT_TASK = Task("summarize")


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"longdoc route: {message}", err=True)
    return typer.Exit(code=code)


def deployment_backends(deployment: Sequence[DeploymentReplica]) -> list[Backend]:
    """Router backends for a deployment described in settings: one per replica."""
    out: list[Backend] = []
    for entry in deployment:
        cfg = KvConfig(entry.block_size, entry.in_flight_tokens, entry.kv_dtype, entry.tp)
        for _ in range(entry.replicas):
            n = sum(b.role == entry.role for b in out)
            out.append(
                Backend(
                    f"{entry.role}-{n}",
                    entry.role,
                    entry.model,
                    entry.max_model_len,
                    entry.kv_cache_bytes,
                    kv=cfg,
                )
            )
    return out


def deployment_summary(settings: Settings) -> dict[str, object]:
    """What a dry run plans against, and where that came from: a plan is only as true
    as the deployment it assumed."""
    configured = "deployment" in settings.model_fields_set
    return {
        "source": "LONGDOC_DEPLOYMENT" if configured else "default (the paper deployment)",
        "replicas": [r.model_dump() for r in settings.deployment],
    }


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


def _read(path: Path, max_pages: int) -> tuple[str, str, list[tuple[PageSpan, str]]]:
    media_type = detect_media_type_path(path)
    buf = io.BytesIO()
    with open_document(path, media_type, max_pages=max_pages) as doc:
        spans = write_pages(doc.pages(), buf)
    text = buf.getvalue().decode("utf-8")
    return media_type, text, [(s, text[s.char_start : s.char_end]) for s in spans]


def route(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The document (PDF, EPUB, DOCX, HTML, text...).")],
    task: Annotated[Task, typer.Option("--task", help="What the job will do.")] = DEFAULT_TASK,
    max_output_tokens: Annotated[
        int, typer.Option("--max-output-tokens", help="Output budget per request.")
    ] = 4096,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Which model a job on FILE runs on, the KV it reserves, and why (no server needed)."""
    settings = settings_of(ctx)
    try:
        media_type, text, pages = _read(file, settings.max_pages)
    except IngestError as exc:
        raise _fail(f"{file}: {exc.reason}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(f"{file}: cannot read it ({exc})") from None
    counters: dict[str, TokenCounter] = {}
    counts: dict[str, TokenCount] = {}
    prompts: dict[str, int] = {}
    # A dry run has no client parameters: it budgets the prompt of plausible ones.
    instruction = instruction_text(task, DRY_RUN_PARAMS[task])
    for role in MODEL_ROLES:
        counter = _counter(role, settings.tokenizers.get(role))
        if counter is None:
            counts[role] = estimate_tokens(len(text))
            prompts[role] = estimate_tokens(len(instruction)).count + TEMPLATE_TOKENS
        else:
            counters[role] = counter
            counts[role] = count_stream(counter, [text])
            prompts[role] = counter.count(instruction) + TEMPLATE_TOKENS
    job = Job(counts, prompts, max_output_tokens)
    try:
        backends = deployment_backends(settings.deployment)
        plan = plan_route(job, backends, PageChunker(pages, counters))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except RouteRefused as exc:
        typer.echo(f"longdoc route: refused ({exc.code}): {exc.reason}", err=True)
        for r in exc.rejected:
            typer.echo(f"  rejected: {r.reason}", err=True)
        raise typer.Exit(code=1) from None
    deployment = deployment_summary(settings)
    if json_out:
        head = {"file": str(file), "media_type": media_type, "pages": len(pages), "task": task}
        body = {**head, "deployment": deployment, "plan": plan.to_json()}
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(f"{file}: {media_type}, {len(pages):,} pages, task {task.value}")
    for line in _deployment_lines(deployment):
        typer.echo(line)
    _print_plan(plan)


def _req_line(req: Request) -> str:
    return (
        f"{req.role} ({req.model}): {req.input_tokens:,} in + {req.output_tokens:,} out = "
        f"{req.total_tokens:,} tokens, KV {req.kv_bytes / GIB:.2f} GiB ({req.kv_blocks:,} "
        f"blocks)"
    )


def _print_plan(plan: Plan) -> None:
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
