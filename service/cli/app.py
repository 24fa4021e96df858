"""`longdoc`: serve, migrate, run a worker, manage keys.

Every command takes `--data-dir` (or LONGDOC_DATA_DIR), before or after its name, so
`longdoc keys create` reaches the same embedded database that `longdoc serve` started.
"""

from __future__ import annotations

import copy
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import func, select
from typer.core import TyperGroup

from service.cli.backends import backends as backends_command
from service.cli.common import prepare
from service.cli.keys import keys
from service.cli.kv import kv as kv_command
from service.cli.route import route as route_command
from service.cli.submit import submit as submit_command
from service.config import get_settings


def _share(params: list[Any], commands: Iterable[Any]) -> None:
    # Duck-typed: typer builds its tree on its own vendored click.
    for command in commands:
        taken = {p.name for p in command.params}
        for param in params:
            if param.name in taken:
                raise RuntimeError(f"`{command.name}` redefines the shared {param.opts[0]}")
            # Its callback applies the value; the command's function never sees it.
            shared = copy.copy(param)
            shared.expose_value = False
            command.params.append(shared)
        _share(params, getattr(command, "commands", {}).values())


class _SharedOptionsGroup(TyperGroup):
    """The top-level group, whose options (the callback's) every command and group
    under it takes too: `longdoc keys create --data-dir D` is `longdoc --data-dir D
    keys create`. Built once when typer builds the click tree, so no command can
    forget one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _share(self.params, self.commands.values())


cli = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, cls=_SharedOptionsGroup)
cli.add_typer(keys, name="keys")
cli.command("kv")(kv_command)
cli.command("route")(route_command)
cli.command("backends")(backends_command)
cli.command("submit")(submit_command)


def _use_data_dir(data_dir: Path | None) -> Path | None:
    if data_dir is not None:
        os.environ["LONGDOC_DATA_DIR"] = str(Path(data_dir).expanduser().resolve())
    get_settings.cache_clear()
    return data_dir


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="LONGDOC_DATA_DIR",
        help="Where the embedded DB, blobs and api-key live.",
        callback=_use_data_dir,
    ),
]


@cli.callback()
def _root(data_dir: DataDir = None) -> None:
    """Applied by the option's callback, here and after every command name."""


@cli.command()
def migrate() -> None:
    """Create or upgrade the schema (alembic upgrade head)."""
    prepare()
    typer.echo(f"schema at head: {get_settings().database_url}")


def _worker_argv(concurrency: int) -> list[str]:
    from service.queue import QUEUES

    return [
        sys.executable, "-m", "celery", "-A", "workers.app", "worker",
        "--queues", ",".join(QUEUES), "--concurrency", str(concurrency), "--loglevel", "INFO",
    ]  # fmt: skip


@cli.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
) -> None:
    """Run a Celery worker for the ingest and jobs queues."""
    prepare()
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
) -> None:
    """Run the API and a worker. With no configuration: SQLite + a serverless broker, and
    a vLLM CPU server on SmolLM2 135M when `make vllm` has built it."""
    import uvicorn

    from service.backends import embedded as embedded_vllm
    from service.backends.server import VllmServerError
    from service.db import get_sessionmaker
    from service.keys import create_key
    from service.models import Tenant

    prepare()
    settings = get_settings()
    with get_sessionmaker()() as session:
        if not session.scalar(select(func.count()).select_from(Tenant)):
            # Whoever starts the service is its operator: the first key is an admin's.
            key = create_key(session, "default", "first start", admin=True)
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
        uvicorn.run("service.api.main:app", host=host, port=port, log_level="info")
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


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the worker if `serve` itself is killed outright."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
