"""`longdoc submit FILE --task summarize`: upload, run one job, print its result.

A client of the REST API like any other (httpx): one upload that also creates the job,
then GET /v1/jobs/{id} until the job ends, saying on stderr what it is doing, and the
result on stdout. Exit status: 0 the job succeeded, 1 it failed, was cancelled or did
not end within --timeout, 2 a usage error or no usable server (unreachable, refused key).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from service.cli.api import (
    DEFAULT_URL,
    Key,
    Params,
    Url,
    api_client,
    call,
    fail,
    parse_params,
)  # fmt: skip
from service.models import FINAL


def _describe(job: dict[str, Any], doc: dict[str, Any]) -> str:
    """One line for the job's state; printed whenever it changes."""
    status: str = job["status"]
    progress = dict(job.get("progress") or {})
    if status == "queued" and doc["status"] == "queued":
        return "document queued for parsing"
    if status == "queued" and doc["status"] == "parsing":
        pages = doc.get("progress") or {}
        return f"parsing {pages.get('pages_done', 0)}/{pages.get('page_count') or '?'} pages"
    if status in FINAL or status == "queued":
        return status
    if status == "waiting_for_capacity":
        line = "waiting for KV capacity"
    elif "map_total" in progress:  # a map-reduce job: its requests are its children
        line = (
            f"running map-reduce: map {progress.pop('map_done', 0)}/{progress.pop('map_total')}"
            f", reduce {progress.pop('reduce_done', 0)}/{progress.pop('reduce_total', '?')}"
        )
    else:
        request = (job.get("plan") or {}).get("request") or {}
        backend = job.get("backend") or {}
        # A tenant's key sees the role and model; an admin's also the URL.
        line = f"running on {backend.get('url') or backend.get('role', '?')}"
        if request:
            line += f" ({request['input_tokens']} tokens in)"
    if "completion_tokens" in progress:  # the stage names the request, not news to a user
        progress.pop("stage", None)
        out = progress.pop("completion_tokens")
        line += f", {out} tokens out" if out else ", prefill"
    if progress:  # anything else the worker reports
        line += " [" + ", ".join(f"{k} {v}" for k, v in progress.items()) + "]"
    return line


def _print_result(result: dict[str, Any], task: str) -> None:
    """extract and classify: their JSON data; the others: the text, which for ask is
    each question with its answer and the pages that support it (the server writes it)."""
    data, text = result.get("data"), result.get("text")
    if (task in ("extract", "classify") and data is not None) or not text:
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        typer.echo(text)
    for warning in result.get("warnings") or []:
        typer.echo(f"warning: {warning}", err=True)


def submit(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The document.")
    ],
    task: Annotated[
        str, typer.Option(help="summarize, extract, ask, classify or prompt.")
    ] = "summarize",
    params: Params = "{}",
    max_output_tokens: Annotated[int, typer.Option(min=1, help="Output budget.")] = 512,
    pages: Annotated[
        str | None, typer.Option(help='Only these pages of FILE: "7", "30-45".')
    ] = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the job.")] = 1800,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result JSON.")] = False,
) -> None:
    """Upload FILE, run TASK on it, wait, print the result (text, or JSON data)."""
    parsed = parse_params(params)
    with api_client(ctx, url, key) as client:
        query = {"task": task, "max_output_tokens": max_output_tokens, "params": json.dumps(parsed)}
        # Checked by the server, as the API checks it; a null is left out of the query.
        query |= {"pages": pages} if pages is not None else {}
        with file.open("rb") as f:
            doc = call(client, "POST", "/v1/documents", params=query, files={"file": f})
        job = doc.get("job")
        if job is None:
            fail(f"the server created no job for task {task!r}: {json.dumps(doc)[:300]}", 2)
        typer.echo(f"document {doc['id']}, job {job['id']}", err=True)
        deadline, last = time.monotonic() + timeout, ""
        while True:
            if job["status"] == "queued":  # planned once the document is parsed
                doc = call(client, "GET", f"/v1/documents/{doc['id']}")
            if (line := _describe(job, doc)) != last:
                typer.echo(line, err=True)
                last = line
            if job["status"] in FINAL:  # JSON strings equal the StrEnum members
                break
            if time.monotonic() > deadline:
                fail(f"gave up after {timeout:.0f} s; job {job['id']} goes on ({last})", 1)
            time.sleep(1.0)
            job = call(client, "GET", f"/v1/jobs/{job['id']}")
        if job["status"] != "succeeded":
            error = job.get("error")
            if error and error.get("raw_output"):
                typer.echo(f"the model's last output: {error['raw_output'][:1000]}", err=True)
            reason = f": {error['code']}: {error['reason']}" if error else ""
            fail(f"job {job['id']} {job['status']}{reason}", 1)
        result = call(client, "GET", f"/v1/jobs/{job['id']}/result")
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        _print_result(result, task)
