"""`longdoc`: serve, migrate, run a worker, manage keys.

Every command takes `--data-dir` (or LONGDOC_DATA_DIR), so `longdoc keys create`
reaches the same embedded database that `longdoc serve` started.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import func, select

from service.backends_cli import backends as backends_command
from service.config import get_settings
from service.kv_cli import kv as kv_command
from service.route_cli import route as route_command

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
keys = typer.Typer(no_args_is_help=True, help="API keys.")
cli.add_typer(keys, name="keys")
cli.command("kv")(kv_command)
cli.command("route")(route_command)
cli.command("backends")(backends_command)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="LONGDOC_DATA_DIR", help="Where the embedded DB and blobs live."
    ),
]


@cli.callback()
def _root(data_dir: DataDir = None) -> None:
    if data_dir is not None:
        os.environ["LONGDOC_DATA_DIR"] = str(data_dir.expanduser().resolve())
    get_settings.cache_clear()


def _prepare() -> None:
    from service.migrate import upgrade

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.blobs.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)


@cli.command()
def migrate() -> None:
    """Create or upgrade the schema (alembic upgrade head)."""
    _prepare()
    typer.echo(f"schema at head: {get_settings().database_url}")


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant name; created if new.")],
    name: Annotated[str | None, typer.Option(help="A label for the key.")] = None,
) -> None:
    """Create an API key for TENANT and print it. It is not shown again."""
    from service.auth import create_key
    from service.db import get_sessionmaker

    _prepare()
    with get_sessionmaker()() as session:
        typer.echo(create_key(session, tenant, name))


def _worker_argv(concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "--queues", "ingest", "--concurrency", str(concurrency), "--loglevel", "INFO",
    ]  # fmt: skip


@cli.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
) -> None:
    """Run a Celery worker for the ingest queue."""
    _prepare()
    argv = _worker_argv(concurrency or get_settings().worker_concurrency)
    os.execv(argv[0], argv)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run the API alone.")] = False,
) -> None:
    """Run the API and a worker. With no configuration: SQLite + a serverless broker."""
    import uvicorn

    from service.auth import create_key
    from service.db import get_sessionmaker
    from service.models import Tenant

    _prepare()
    settings = get_settings()
    with get_sessionmaker()() as session:
        if not session.scalar(select(func.count()).select_from(Tenant)):
            key = create_key(session, "default", "first start")
            typer.secho(f"\nAPI key for tenant 'default' (shown once):\n\n  {key}\n", bold=True)
    typer.echo(f"database: {settings.database_url}\nbroker:   {settings.broker_url}")
    child = None
    if not no_worker:
        child = subprocess.Popen(
            _worker_argv(concurrency or settings.worker_concurrency),
            preexec_fn=_die_with_parent,
        )
    # uvicorn re-raises SIGTERM after its own shutdown; turn it into SystemExit so
    # the `finally` below still stops the worker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run("service.main:app", host=host, port=port, log_level="info")
    finally:
        if child is not None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the worker if `serve` itself is killed outright."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
