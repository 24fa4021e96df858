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
from service.submit_cli import submit as submit_command

cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
keys = typer.Typer(no_args_is_help=True, help="API keys.")
cli.add_typer(keys, name="keys")
cli.command("kv")(kv_command)
cli.command("route")(route_command)
cli.command("backends")(backends_command)
cli.command("submit")(submit_command)

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
    from workers.celery_app import QUEUES

    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "--queues", ",".join(QUEUES), "--concurrency", str(concurrency), "--loglevel", "INFO",
    ]  # fmt: skip


@cli.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
) -> None:
    """Run a Celery worker for the ingest and jobs queues."""
    _prepare()
    argv = _worker_argv(concurrency or get_settings().worker_concurrency)
    os.execv(argv[0], argv)


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run the API alone.")] = False,
    no_vllm: Annotated[
        bool, typer.Option("--no-vllm", help="Start no vLLM server, even with none configured.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Run the API and a worker. With no configuration: SQLite + a serverless broker, and
    a vLLM CPU server on SmolLM2 135M when `make vllm` has built it."""
    import uvicorn

    from service import embedded_vllm
    from service.auth import create_key
    from service.db import get_sessionmaker
    from service.models import Tenant
    from workers.vllm_server import VllmServerError

    _use_data_dir(data_dir)
    _prepare()
    settings = get_settings()
    with get_sessionmaker()() as session:
        if not session.scalar(select(func.count()).select_from(Tenant)):
            key = create_key(session, "default", "first start")
            key_file = write_key_file(settings.data_dir, key)
            typer.secho(f"\nAPI key for tenant 'default' (shown once):\n\n  {key}\n", bold=True)
            typer.echo(f"(also in {key_file}, where `longdoc submit` finds it)\n")
    typer.echo(f"database: {settings.database_url}\nbroker:   {settings.broker_url}")
    # Before vLLM starts (~40 s): a SIGTERM meanwhile must still reach the `finally`.
    # uvicorn re-raises SIGTERM after its own shutdown; SystemExit runs the `finally` too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = None
    child = None
    try:
        if settings.backends:
            typer.echo("backends: " + ", ".join(f"{b.role} {b.url}" for b in settings.backends))
        elif not no_vllm and settings.embedded_vllm:
            try:
                server = embedded_vllm.start(settings, typer.echo)
            except VllmServerError as exc:
                typer.secho(f"{exc}\n(`longdoc serve --no-vllm` runs without it)", err=True)
                raise typer.Exit(1) from None
        else:
            typer.echo("no backends: documents are parsed but jobs wait for a backend")
        settings = get_settings()  # the embedded server changed the backends
        if not no_worker:
            child = subprocess.Popen(
                _worker_argv(concurrency or settings.worker_concurrency),
                preexec_fn=_die_with_parent,
            )
        uvicorn.run("service.main:app", host=host, port=port, log_level="info")
    finally:
        if child is not None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        # After the worker: it may still be finishing a request on this server.
        embedded_vllm.stop(server, typer.echo)


def write_key_file(data_dir: Path, key: str) -> Path:
    """`<data_dir>/api-key`, readable by its owner only, for `longdoc submit`."""
    path = data_dir / "api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        f.write(key + "\n")
    return path


def _use_data_dir(data_dir: Path | None) -> None:
    """`--data-dir` given after the command name: the same as before it (`_root`)."""
    if data_dir is not None:
        os.environ["LONGDOC_DATA_DIR"] = str(data_dir.expanduser().resolve())
        get_settings.cache_clear()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the worker if `serve` itself is killed outright."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
