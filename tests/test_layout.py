"""The imports run one way: the faces (service/api, service/cli, workers/) use the
core (the rest of service/), which uses ingestion/; never the other way round.
Checked on the source (every import, also those inside functions) and on a worker
process's real imports."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from service import queue

ROOT = Path(__file__).resolve().parents[1]
FACES = ("service.api", "service.cli", "workers")
WEB = ("fastapi", "starlette")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[str]:
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{_module(path)} imports {name}"
        for path in paths
        for name in sorted(set(_imports(path)))
        if _under(name, forbidden)
    ]


def test_the_core_imports_no_face_and_no_web_framework() -> None:
    core = [p for p in _sources("service") if not _under(_module(p), FACES)]
    assert core, "no core modules found"
    assert _violations(core, FACES + WEB) == []


def test_the_workers_import_neither_the_api_nor_the_cli_nor_a_web_framework() -> None:
    assert _violations(_sources("workers"), ("service.api", "service.cli", *WEB)) == []


def test_ingestion_imports_no_service_and_no_worker() -> None:
    banned = ("service", "workers", "celery", "sqlalchemy", "httpx", *WEB)
    assert _violations(_sources("ingestion"), banned) == []


def test_the_cli_modules_do_not_import_the_app_that_registers_them() -> None:
    cli = [p for p in _sources("service/cli") if _module(p) != "service.cli.app"]
    assert _violations(cli, ("service.cli.app",)) == []


def _in_a_worker(code: str) -> str:
    """Run `code` in a fresh interpreter after what `celery -A workers.app worker` does
    before it takes a task: import the app, then the modules its configuration names."""
    boot = "import workers.app\nworkers.app.app.loader.import_default_modules()\n"
    done = subprocess.run(
        [sys.executable, "-c", boot + code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_worker_process_loads_no_web_framework() -> None:
    _in_a_worker(
        "import sys\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette'))\n"
        "assert not loaded, loaded\n"
    )


def test_a_worker_registers_every_task_the_producer_sends() -> None:
    # Every task name service/queue.py sends (its *_TASK constants), so that one added
    # there without its module in the worker's `imports` fails here, not in production.
    sent = {v for k, v in vars(queue).items() if k.endswith("_TASK") and isinstance(v, str)}
    assert sent, "service.queue names no tasks"
    registered = set(
        json.loads(_in_a_worker("import json\nprint(json.dumps(sorted(workers.app.app.tasks)))\n"))
    )
    assert sent <= registered, sorted(sent - registered)
