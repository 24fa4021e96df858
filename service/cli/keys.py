"""`longdoc keys create | list | revoke`."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer

from service.cli.options import settings_of

keys = typer.Typer(no_args_is_help=True, help="API keys.")


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


@keys.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="An operator's key: sees backend URLs, errors, load.")
    ] = False,
) -> None:
    """Create an API key for TENANT and print it. It is not shown again."""
    from service.cli.common import prepare
    from service.db import sessions_for
    from service.keys import create_key

    settings = settings_of(ctx)
    prepare(settings)
    with sessions_for(settings) as sessions, sessions() as session:
        typer.echo(create_key(session, tenant, name, admin=admin))


@keys.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every key: id, tenant, prefix, name, admin, created, last used, revoked. The
    secrets are not stored, so not shown."""
    from service.cli.common import prepare
    from service.db import sessions_for
    from service.keys import list_keys

    settings = settings_of(ctx)
    prepare(settings)
    with sessions_for(settings) as sessions, sessions() as session:
        rows = list_keys(session, tenant)
    if json_out:
        typer.echo(json.dumps([asdict(k) for k in rows], default=str, indent=2))
        return
    typer.echo(
        f"{'id':<36}  {'tenant':<20} {'prefix':<15} {'name':<20} {'admin':<5}  "
        f"{'created':<19}  {'last used':<19}  revoked"
    )
    for k in rows:
        typer.echo(
            f"{k.id!s:<36}  {k.tenant:<20} {k.prefix:<15} {k.name or '-':<20} "
            f"{'yes' if k.admin else 'no':<5}  {_when(k.created_at):<19}  "
            f"{_when(k.last_used_at):<19}  {_when(k.revoked_at)}"
        )


@keys.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The key's id or prefix (from `keys list`).")],
) -> None:
    """Revoke a key: every request with it is refused (401) from now on."""
    from service.cli.common import prepare
    from service.db import sessions_for
    from service.keys import KeyNotFound, revoke_key

    settings = settings_of(ctx)
    prepare(settings)
    with sessions_for(settings) as sessions, sessions() as session:
        try:
            info, newly = revoke_key(session, key)
        except KeyNotFound as exc:
            typer.echo(f"longdoc keys revoke: {exc}", err=True)
            raise typer.Exit(1) from None
    state = "revoked" if newly else "was already revoked at " + _when(info.revoked_at)
    typer.echo(f"key {info.prefix} ({info.id}) of tenant {info.tenant}: {state}")
