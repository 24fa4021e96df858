"""`longdoc healthcheck`: the container health check of the API (the image's
HEALTHCHECK): its liveness route answers on this host. A worker's check is Celery's
own ping of its node (docker-compose.yml), which needs no command here."""

from __future__ import annotations

import os
from typing import Annotated

import httpx
import typer


def healthcheck(
    url: Annotated[
        str | None,
        typer.Option(help="Default: http://127.0.0.1:$LONGDOC_PORT/healthz (port 8000)."),
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait.")] = 5.0,
) -> None:
    """Exit 0 when the API answers /healthz with 200, 1 otherwise (with the reason)."""
    url = url or f"http://127.0.0.1:{os.environ.get('LONGDOC_PORT', '8000')}/healthz"
    try:
        status = httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        typer.echo(f"unhealthy: {url}: {exc.__class__.__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    if status != 200:
        typer.echo(f"unhealthy: {url} answered {status}", err=True)
        raise typer.Exit(1)
    typer.echo(f"healthy: {url}")
