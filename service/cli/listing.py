"""`longdoc batches [ID]` and `longdoc jobs [ID]`: the tenant's batches and jobs as
the API lists and shows them, one line each or one object in full (`--json`: the
API's own JSON); `longdoc batches ID --cancel` cancels one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from service.cli.api import DEFAULT_URL, Key, Url, api_client, call

AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON.")]
Limit = Annotated[int, typer.Option(min=1, max=100, help="How many to list, newest first.")]


def _when(unix: int | None) -> str:
    if unix is None:
        return "-"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _echo_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, ensure_ascii=False))


def _batch_line(b: dict[str, Any]) -> str:
    c = b["request_counts"]
    done = c["completed"] + c["failed"] + c["cancelled"] + c["expired"]
    return (
        f"{b['id']}  {b['status']:<11} {done}/{c['total']} done, {c['failed']} failed  "
        f"{b.get('task') or b.get('endpoint') or '-'}  {b.get('filename') or '-'}  "
        f"{_when(b['created_at'])}"
    )


def _show_batch(b: dict[str, Any]) -> None:
    c = b["request_counts"]
    typer.echo(f"batch      {b['id']} ({b['kind']})")
    typer.echo(f"status     {b['status']}")
    typer.echo(f"task       {b.get('task') or '-'} {json.dumps(b.get('params') or {})}")
    typer.echo(f"file       {b.get('filename') or '-'}")
    typer.echo(
        f"requests   {c['total']}: {c['completed']} succeeded, {c['failed']} failed, "
        f"{c['cancelled']} cancelled, {c['expired']} expired"
    )
    for name in ("created", "in_progress", "finalizing", "completed", "failed", "expires",
                 "expired", "cancelling", "cancelled"):  # fmt: skip
        if (at := b.get(f"{name}_at")) is not None:
            typer.echo(f"{name + '_at':<15} {_when(at)}")
    for error in (b.get("errors") or {}).get("data") or []:
        typer.echo(f"error      {error.get('code')}: {error.get('message')}")


def batches(
    ctx: typer.Context,
    batch_id: Annotated[str | None, typer.Argument(help="A batch: show it.")] = None,
    cancel: Annotated[bool, typer.Option("--cancel", help="Cancel the batch ID.")] = False,
    as_json: AsJson = False,
    limit: Limit = 20,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List the tenant's batches, or show (or cancel) one."""
    if cancel and batch_id is None:
        raise typer.BadParameter("--cancel needs a batch ID", param_hint="'ID'")
    with api_client(ctx, url, key) as client:
        if batch_id is not None:
            verb, path = ("POST", f"/{batch_id}/cancel") if cancel else ("GET", f"/{batch_id}")
            one = call(client, verb, "/v1/batches" + path)
            if as_json:
                _echo_json(one)
            else:
                _show_batch(one)
            return
        listed = call(client, "GET", "/v1/batches", params={"limit": limit})
    if as_json:
        _echo_json(listed)
        return
    for b in listed["data"]:
        typer.echo(_batch_line(b))
    if listed["has_more"]:
        typer.echo(f"(more than {limit}; --limit for more)", err=True)


def _job_line(j: dict[str, Any]) -> str:
    reason = f"  {j['error']['code']}" if j.get("error") else ""
    return (
        f"{j['id']}  {j['status']:<20} {j['task']:<9} doc {j.get('document_id') or '-'}  "
        f"{j['timings']['created_at'][:19]}{reason}"
    )


def _show_job(j: dict[str, Any]) -> None:
    t = j["timings"]
    typer.echo(f"job        {j['id']}")
    typer.echo(f"status     {j['status']} (attempts {j['attempts']})")
    typer.echo(f"task       {j['task']} {json.dumps(j['params'])}, max {j['max_output_tokens']}")
    typer.echo(f"document   {j.get('document_id') or '-'}")
    if backend := j.get("backend"):
        where = backend.get("url") or backend["role"]
        typer.echo(f"backend    {where} {backend.get('model') or ''}")
    if progress := j.get("progress"):
        typer.echo(f"progress   {json.dumps(progress)}")
    if error := j.get("error"):
        typer.echo(f"error      {error['code']}: {error['reason']}")
    for name in ("created_at", "started_at", "finished_at"):
        typer.echo(f"{name:<11} {(t.get(name) or '-')[:19]}")
    if t.get("total_s") is not None:
        typer.echo(f"total_s    {t['total_s']:.1f}")


def jobs(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(help="A job: show it.")] = None,
    status: Annotated[str | None, typer.Option(help="List only jobs in this status.")] = None,
    as_json: AsJson = False,
    limit: Limit = 20,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """List the tenant's jobs, or show one."""
    with api_client(ctx, url, key) as client:
        if job_id is not None:
            one = call(client, "GET", f"/v1/jobs/{job_id}")
            if as_json:
                _echo_json(one)
            else:
                _show_job(one)
            return
        query: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        listed = call(client, "GET", "/v1/jobs", params=query)
    if as_json:
        _echo_json(listed)
        return
    for j in listed["items"]:
        typer.echo(_job_line(j))
    if listed["total"] > len(listed["items"]):
        typer.echo(f"({len(listed['items'])} of {listed['total']}; --limit for more)", err=True)
