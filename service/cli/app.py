"""`longdoc`: serve, migrate, run a worker, manage keys.

Every command takes `--data-dir` (or LONGDOC_DATA_DIR), before or after its name, so
`longdoc keys create` reaches the same embedded database that `longdoc serve` started.
A command runs with the Settings its options build (service.cli.options) and starts
the worker and the API with them, as their environment.
"""

from __future__ import annotations

import copy
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import func, select
from typer.core import TyperGroup

from service.cli.backends import backends as backends_command
from service.cli.batch import batch as batch_command
from service.cli.common import prepare
from service.cli.health import healthcheck as healthcheck_command
from service.cli.keys import keys
from service.cli.kv import kv as kv_command
from service.cli.listing import batches as batches_command
from service.cli.listing import jobs as jobs_command
from service.cli.options import DataDir, settings_of
from service.cli.route import route as route_command
from service.cli.submit import submit as submit_command
from service.config import Settings, as_environment


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
cli.command("batch")(batch_command)
cli.command("batches")(batches_command)
cli.command("jobs")(jobs_command)
cli.command("healthcheck")(healthcheck_command)


@cli.callback()
def _root(data_dir: DataDir = None) -> None:
    """Applied by the option's callback, here and after every command name."""


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with `settings` over it: a worker or API started with
    it builds the same Settings as this command."""
    return {**os.environ, **as_environment(settings)}


@cli.command()
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the schema (alembic upgrade head). In the compose stack, the
    one-shot step everything waits on: it also refuses a stack whose gated models have
    no HF_TOKEN to download them with."""
    from service import stack

    settings = settings_of(ctx)
    servers = stack.active(settings.vllm_stack, settings.stack_profiles)
    missing = stack.missing_token(servers, os.environ)
    if missing:
        typer.secho(f"longdoc: {missing}", err=True, fg="red")
        raise typer.Exit(2)
    prepare(settings)
    typer.echo(f"schema at head: {settings.database_url}")


def _worker_argv(concurrency: int, settings: Settings, queues: Sequence[str] = ()) -> list[str]:
    from service.logs import wants_json
    from service.queue import QUEUES

    queues = tuple(queues or QUEUES)
    # A worker of one queue is named for it (`jobs@host`), so a health check pings that
    # worker alone where two share a host; one of both keeps Celery's `celery@host`.
    name = queues[0] if len(queues) == 1 else "celery"
    # The worker writes to this command's stderr: where that takes JSON lines, Celery's
    # start-up banner (plain text on stdout) is left out of them.
    quiet = ["--quiet"] if wants_json(settings.log_format, sys.stderr) else []
    return [
        sys.executable, "-m", "celery", *quiet, "-A", "workers.app", "worker",
        "--queues", ",".join(queues), "--concurrency", str(concurrency), "--loglevel", "INFO",
        "--hostname", f"{name}@%h",
    ]  # fmt: skip


def _queues(value: str | None) -> list[str]:
    from service.queue import QUEUES

    if not value:
        return list(QUEUES)
    queues = [q.strip() for q in value.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise typer.BadParameter(f"queues are {', '.join(QUEUES)}; not {', '.join(unknown)}")
    return queues


def _api_argv(host: str, port: int) -> list[str]:
    # uvicorn under the API's own entry point, which sets its logging up (service/logs.py).
    return [
        sys.executable, "-m", "service.api.serve", "--host", host, "--port", str(port),
    ]  # fmt: skip


@cli.command()
def worker(
    ctx: typer.Context,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated: ingest, jobs, ocr (default: all).")
    ] = None,
) -> None:
    """Run a Celery worker for the ingest and jobs queues (or those of --queues)."""
    chosen = _queues(queues)
    settings = settings_of(ctx)
    prepare(settings)
    argv = _worker_argv(concurrency or settings.worker_concurrency, settings, chosen)
    os.execve(argv[0], argv, child_environment(settings))


@cli.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(envvar="LONGDOC_HOST", help="Interface to bind.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(envvar="LONGDOC_PORT", help="Port to bind.")] = 8000,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Worker processes.")] = None,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Run the API alone.")] = False,
    no_vllm: Annotated[
        bool, typer.Option("--no-vllm", help="Start no vLLM server, even with none configured.")
    ] = False,
) -> None:
    """Run the API and a worker. With no configuration: SQLite + a serverless broker, and
    a vLLM CPU server on SmolLM2 135M when `make vllm` has built it."""
    from service.backends import embedded as embedded_vllm
    from service.backends.server import VllmServerError
    from service.db import sessions_for
    from service.keys import create_key
    from service.models import Tenant

    settings = settings_of(ctx)
    prepare(settings)
    with sessions_for(settings) as sessions, sessions() as session:
        if not session.scalar(select(func.count()).select_from(Tenant)):
            # Whoever starts the service is its operator: the first key is an admin's.
            key = create_key(session, "default", "first start", admin=True)
            key_file = write_key_file(settings.data_dir, key)
            typer.secho(f"\nAPI key for tenant 'default' (shown once):\n\n  {key}\n", bold=True)
            typer.echo(f"(also in {key_file}, where `longdoc submit` finds it)\n")
    typer.echo(f"database: {settings.database_url}\nbroker:   {settings.broker_url}")
    # Before vLLM starts (~40 s): a SIGTERM meanwhile must still reach the `finally`,
    # which stops what serve started; SystemExit runs it. Ctrl-C too, without a
    # traceback (the API and the worker, in serve's process group, get it as well).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    server = None
    children: list[subprocess.Popen[bytes]] = []
    try:
        if settings.backends:
            typer.echo("backends: " + ", ".join(f"{b.role} {b.url}" for b in settings.backends))
        elif not no_vllm and settings.embedded_vllm:
            try:
                server = embedded_vllm.start(settings, typer.echo)
            except VllmServerError as exc:
                typer.secho(f"{exc}\n(`longdoc serve --no-vllm` runs without it)", err=True)
                raise typer.Exit(1) from None
            if server is not None:
                settings = embedded_vllm.serving(settings, server.url)
        else:
            typer.echo("no backends: documents are parsed but jobs wait for a backend")
        # The API and the worker are processes of their own that get these settings
        # as their environment (the embedded server's among them).
        env = child_environment(settings)
        children.append(_start_child(_api_argv(host, port), env))
        if not no_worker:
            argv = _worker_argv(concurrency or settings.worker_concurrency, settings)
            children.append(_start_child(argv, env))
        ended = _wait_for_one(children)
        name = "the API" if ended is children[0] else "the worker"
        typer.echo(f"{name} exited with status {ended.returncode}; stopping", err=True)
    finally:
        # A second signal must not cut the stopping short (and leave vLLM running).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        # The API first: no new work while the worker finishes what it holds.
        for child in children:
            _stop_child(child)
        # After the worker: it may still be finishing a request on this server.
        embedded_vllm.stop(server, typer.echo)
    raise typer.Exit(ended.returncode or 1)


def _start_child(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # In serve's process group (a Ctrl-C reaches it too), unlike vLLM's own session.
    return subprocess.Popen(argv, env=env, preexec_fn=_die_with_parent)


def _wait_for_one(children: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Block until one of `children` exits (a SIGTERM to serve interrupts it). Waits on
    serve's own process group, so vLLM (a session of its own) is not among what ends
    the wait; anything else there is reaped and the wait goes on."""
    while True:
        info = os.waitid(os.P_PGID, os.getpgid(0), os.WEXITED | os.WNOWAIT)
        for child in children:
            if child.poll() is not None:
                return child
        if info is not None:
            os.waitpid(info.si_pid, 0)


def _stop_child(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def write_key_file(data_dir: Path, key: str) -> Path:
    """`<data_dir>/api-key`, readable by its owner only, for `longdoc submit`."""
    path = data_dir / "api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        f.write(key + "\n")
    return path


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the API or the worker if `serve` itself is killed outright."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
