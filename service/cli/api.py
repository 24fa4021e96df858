"""What the `longdoc` commands that talk to a running API share: its URL and key
options, one client set up the same way for all, and one way to call it (any answer
but 2xx, or none, ends the command with status 2 and the server's reason)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from service.cli.options import settings_of

Url = Annotated[str, typer.Option(envvar="LONGDOC_URL", help="The API.")]
DEFAULT_URL = "http://127.0.0.1:8000"
Key = Annotated[
    str | None,
    typer.Option(envvar="LONGDOC_API_KEY", help="API key; default: DATA_DIR/api-key."),
]
Params = Annotated[
    str,
    typer.Option(
        help='The task\'s parameters, JSON or @file.json: ask {"questions": [...]}, '
        'extract {"schema": {...}}, classify {"labels": [...]}, prompt {"instruction": "..."}.'
    ),
]


def fail(message: str, code: int) -> NoReturn:
    """End the command: `longdoc NAME: message` on stderr, exit status `code`."""
    ctx = click_context()
    name = f"longdoc {ctx.info_name}" if ctx is not None and ctx.parent is not None else "longdoc"
    typer.echo(f"{name}: {message}", err=True)
    raise typer.Exit(code)


def click_context() -> typer.Context | None:
    import click

    ctx = click.get_current_context(silent=True)
    return ctx if isinstance(ctx, typer.Context) else None


def parse_params(value: str) -> dict[str, Any]:
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
        params = json.loads(text)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{value!r}: {exc}", param_hint="'--params'") from None
    if not isinstance(params, dict):
        raise typer.BadParameter(f"{value!r}: not a JSON object", param_hint="'--params'")
    return params


def api_key(key: str | None, data_dir: Path) -> str:
    if key:
        return key
    path = data_dir / "api-key"
    try:
        return path.read_text().strip()
    except OSError:
        fail(
            f"no API key: pass --key or set LONGDOC_API_KEY ({path} is written by the first "
            "`longdoc serve`; `longdoc keys create --tenant default` makes another)",
            2,
        )


@contextmanager
def api_client(ctx: typer.Context, url: str, key: str | None) -> Iterator[httpx.Client]:
    """A client of the API at `url` with the command's key (--key, or the data dir's)."""
    headers = {"Authorization": f"Bearer {api_key(key, settings_of(ctx).data_dir)}"}
    # No read timeout past a minute: an upload's answer comes once the archive is scanned.
    timeouts = httpx.Timeout(60.0, connect=5.0)
    with httpx.Client(base_url=url, headers=headers, timeout=timeouts) as client:
        yield client


def detail(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    found = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(found, dict) and "reason" in found:  # Longdoc's {"error": {code, reason}}
        return f"{found.get('code', 'error')}: {found['reason']}"
    return json.dumps(found)


def check(resp: httpx.Response, method: str, path: str) -> None:
    if resp.status_code in (401, 403):
        fail(f"the server refused the API key ({resp.status_code}): {detail(resp)}", 2)
    if resp.is_error:
        fail(f"{method} {path}: {resp.status_code} {detail(resp)}", 2)


def unreachable(client: httpx.Client, exc: httpx.TransportError) -> NoReturn:
    reason = f"{type(exc).__name__}: {exc}"
    fail(f"cannot reach {client.base_url} ({reason}); is `longdoc serve` running?", 2)


def call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One request and its JSON body."""
    try:
        resp = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        unreachable(client, exc)
    check(resp, method, path)
    body: dict[str, Any] = resp.json()
    return body
