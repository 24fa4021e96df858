"""`longdoc batch PATH --task summarize -o results.jsonl`: one archive batch, followed
to its end.

PATH is an archive, uploaded as it is, or a directory, packed into a tar while it
uploads (service.cli.packing). The batch is polled (GET /v1/batches/{id}) behind a
progress bar on stderr; whatever has become final is read from /results, from the
cursor the call before handed out, and added to -o (stdout without it), each
custom_id once: run the same command again and the API's dedup hands back the same
batch, and only the lines the file lacks are written.
Ctrl-C leaves the batch running. Exit status: 0 the batch completed with every
request succeeded, 1 it ended otherwise or some requests failed, 2 a usage error or
no usable server, 130 interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, cast

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from service.cli.api import (
    DEFAULT_URL,
    Key,
    Params,
    Url,
    api_client,
    call,
    check,
    fail,
    parse_params,
    unreachable,
)
from service.cli.options import OcrLanguagesOption, OcrModeOption
from service.cli.packing import PackError, StreamReader, entries, tar_stream

FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# The results' paging headers (the API's batch_views.NEXT_CURSOR and MORE).
NEXT_CURSOR = "Longdoc-Next-Cursor"
MORE = "Longdoc-More"
# The upload's answer comes once the server has read the archive through: no read limit.
UPLOAD_TIMEOUT = httpx.Timeout(None, connect=5.0)


def _tokens(line: dict[str, Any]) -> int:
    body = (line.get("response") or {}).get("body") or {}
    return int(body.get("prompt_tokens") or 0) + int(body.get("completion_tokens") or 0)


class Results:
    """The output lines written so far, by custom_id, and where new ones go."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.seen: set[str] = set()
        self.tokens = 0
        self.written = 0
        # Where the next /results call resumes. Not kept in the file: a run that resumes
        # one starts from the first line and skips the custom_ids the file has.
        self.cursor: str | None = None
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        text = path.read_bytes()
        if text and not text.endswith(b"\n"):
            # A line cut short by an earlier run's end: written again whole below.
            keep = text.rfind(b"\n") + 1
            with path.open("r+b") as f:
                f.truncate(keep)
            text = text[:keep]
        for raw in text.splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                self.seen.add(line["custom_id"])
                self.tokens += _tokens(line)

    def add(self, raw: str, out: IO[str]) -> None:
        line = json.loads(raw)
        if line["custom_id"] in self.seen:
            return
        out.write(raw.rstrip("\n") + "\n")
        self.seen.add(line["custom_id"])
        self.tokens += _tokens(line)
        self.written += 1

    @contextmanager
    def sink(self) -> Iterator[IO[str]]:
        if self.path is None:
            yield sys.stdout
            sys.stdout.flush()
            return
        with self.path.open("a", encoding="utf-8") as f:
            yield f


def _upload(client: httpx.Client, path: Path, query: dict[str, Any]) -> httpx.Response:
    route = "/v1/batches/archive"
    if not path.is_dir():
        with path.open("rb") as f:
            return client.post(route, params=query, files={"file": (path.name, f)},
                               timeout=UPLOAD_TIMEOUT)  # fmt: skip
    found, skipped = entries(path)
    if not found:
        fail(f"{path}: no files in the directory to send", 2)
    if skipped:
        typer.echo(f"left out {skipped} links or special files (not followed)", err=True)
    name = f"{path.resolve().name or 'root'}.tar"
    # Read like a file (read() only), which is all httpx's multipart asks of one.
    body = cast("IO[bytes]", StreamReader(tar_stream(found)))
    files = {"file": (name, body, "application/x-tar")}
    return client.post(route, params=query, files=files, timeout=UPLOAD_TIMEOUT)


def _create(client: httpx.Client, path: Path, query: dict[str, Any]) -> dict[str, Any]:
    try:
        resp = _upload(client, path, query)
    except httpx.TransportError as exc:
        unreachable(client, exc)
    except PackError as exc:
        fail(f"{path}: {exc}", 2)
    except OSError as exc:  # the archive itself unreadable
        fail(f"{path}: {exc.strerror or exc}", 2)
    check(resp, "POST", "/v1/batches/archive")
    batch: dict[str, Any] = resp.json()
    batch["_again"] = resp.status_code == 200
    return batch


def _fetch_page(client: httpx.Client, path: str, results: Results) -> bool:
    """One page of results after `results.cursor`, written; whether more follow now."""
    params = {} if results.cursor is None else {"after": results.cursor}
    with client.stream("GET", path, params=params) as resp, results.sink() as out:
        if resp.is_error:
            resp.read()
            check(resp, "GET", path)
        for raw in resp.iter_lines():
            if raw.strip():
                results.add(raw, out)
        # Taken only once the whole page is read and written, so the cursor never runs
        # ahead of the file (a server without one: from the start again, deduplicated).
        results.cursor = resp.headers.get(NEXT_CURSOR)
        more: str | None = resp.headers.get(MORE)
    return more == "true"


def _fetch_results(client: httpx.Client, batch_id: str, results: Results) -> None:
    """What has become final since the last call: the cursor carries on from there
    (requests below it that were not final then included), page after page."""
    path = f"/v1/batches/{batch_id}/results"
    try:
        while _fetch_page(client, path, results):
            pass
    except httpx.TransportError as exc:
        unreachable(client, exc)


def _done(batch: dict[str, Any]) -> int:
    counts = batch["request_counts"]
    return int(counts["completed"] + counts["failed"] + counts["cancelled"] + counts["expired"])


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("entries, {task.fields[failed]} failed, {task.fields[tokens]} tokens"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )


def _follow(client: httpx.Client, batch: dict[str, Any], results: Results, every: float) -> Any:
    """Poll until the batch ends, writing results as they become final."""
    fetched = -1
    with _progress(Console(stderr=True)) as progress:
        bar = None
        while True:
            final = batch["status"] in FINAL
            done = _done(batch)
            if done > fetched or final:
                _fetch_results(client, batch["id"], results)
                fetched = done
            counts = batch["request_counts"]
            fields = {"failed": counts["failed"], "tokens": results.tokens}
            total = counts["total"] or None
            if bar is None:  # the first count is where it stands, not a speed
                bar = progress.add_task(batch["status"], total=total, completed=done, **fields)
            progress.update(bar, description=batch["status"], total=total, completed=done,
                            **fields)  # fmt: skip
            if final:
                return batch
            time.sleep(every)
            batch = call(client, "GET", f"/v1/batches/{batch['id']}")


def _summary(batch: dict[str, Any], results: Results) -> tuple[str, int]:
    c = batch["request_counts"]
    line = (
        f"batch {batch['id']} {batch['status']}: {c['completed']} succeeded, {c['failed']} "
        f"failed, {c['cancelled']} cancelled, {c['expired']} expired; {results.tokens} tokens"
    )
    if results.path is not None:
        line += f"; {results.written} new lines in {results.path}"
    ok = batch["status"] == "completed" and c["completed"] == c["total"]
    return line, 0 if ok else 1


def _interrupted(batch_id: str) -> None:
    typer.echo(
        f"\ninterrupted; batch {batch_id} goes on.\n"
        f"  follow:  longdoc batches {batch_id}   (or run this command again to resume)\n"
        f"  cancel:  longdoc batches {batch_id} --cancel",
        err=True,
    )


def batch(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="An archive, or a directory.", show_default=False)],
    task: Annotated[
        str, typer.Option(help="summarize, extract, ask, classify or prompt.")
    ] = "summarize",
    params: Params = "{}",
    max_output_tokens: Annotated[int, typer.Option(min=1, help="Output budget.")] = 1024,
    completion_window: Annotated[str, typer.Option(help="1h to 168h.")] = "24h",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="JSONL results; default stdout."),
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 1.0,
    ocr: OcrModeOption = None,
    ocr_languages: OcrLanguagesOption = None,
    url: Url = DEFAULT_URL,
    key: Key = None,
) -> None:
    """Run TASK on every entry of PATH as one batch; write the results as they end."""
    if not path.exists():  # said on one line, which typer's own check boxes and wraps
        fail(f"{path}: no such file or directory", 2)
    query = {
        "task": task,
        "params": json.dumps(parse_params(params)),
        "max_output_tokens": max_output_tokens,
        "completion_window": completion_window,
    }
    # Checked by the server, before the archive is sent, as a single upload's.
    query.update({k: v for k, v in (("ocr", ocr), ("ocr_languages", ocr_languages)) if v})
    results = Results(output)
    with api_client(ctx, url, key) as client:
        try:
            created = _create(client, path, query)
        except KeyboardInterrupt:
            typer.echo("\ninterrupted during the upload (see `longdoc batches`)", err=True)
            raise typer.Exit(130) from None
        try:
            # In here: once the id is out, an interrupt says how to follow it.
            again = " (the same as before: resuming)" if created.pop("_again") else ""
            typer.echo(f"batch {created['id']}{again}", err=True)
            ended = _follow(client, created, results, interval)
        except KeyboardInterrupt:
            _interrupted(created["id"])
            raise typer.Exit(130) from None
    line, code = _summary(ended, results)
    typer.echo(line, err=True)
    raise typer.Exit(code)
