"""`longdoc backends`: probe every configured vLLM server now, then show the table."""

from __future__ import annotations

from typing import Annotated

import typer

from service.api.backend_schemas import BackendList, BackendOut
from service.backends import discovery
from service.cli.options import settings_of

_GIB = 1 << 30


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / _GIB:.2f}G"


def _line(b: BackendOut) -> str:
    state = discovery.state(b.healthy, bool(b.mismatches), b.usable)
    if state == "down":
        state = "DOWN"  # what an operator scanning the table must not miss
    elif b.mismatches:
        state += f": {b.last_error}"  # discovery writes the reason there
    ctx = "?" if b.max_model_len is None else f"{b.max_model_len:,}"
    cap = f"{_gib(b.kv_capacity_bytes)} ({b.capacity_source})"
    return (
        f"{b.role:<6} {b.url:<28} {b.model or '?':<28} {ctx:>10} {cap:>20} {b.kv_dtype or '?':>5} "
        f"{_gib(b.leased_bytes):>9} {_gib(b.free_bytes):>9}  {state}"
    )


def backends(
    ctx: typer.Context,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Probe the configured backends (LONGDOC_BACKENDS) once and show what they report."""
    from service.api.backend_views import describe
    from service.backends.discovery import refresh
    from service.db import sessions_for
    from service.migrate import upgrade
    from service.models import utcnow

    settings = settings_of(ctx)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with sessions_for(settings) as sessions, sessions() as session:
        refresh(session, settings, utcnow())
        listing = BackendList(items=describe(session, utcnow()))
    if json_out:
        typer.echo(listing.model_dump_json(indent=2))
        return
    if not listing.items:
        typer.echo("no backends configured (set LONGDOC_BACKENDS)")
        return
    typer.echo(
        f"{'role':<6} {'url':<28} {'model':<28} {'max ctx':>10} {'KV capacity':>20} {'KV':>5} "
        f"{'leased':>9} {'free':>9}  health"
    )
    for b in listing.items:
        typer.echo(_line(b))
        for name, o in b.overrides.items():
            typer.echo(f"       override {name}={o.configured:,} (server says {o.measured})")
        if b.last_error and not b.mismatches:  # a mismatch's is on the line above
            typer.echo(f"       {b.last_error}")
