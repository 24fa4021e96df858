"""Lint and type checks are part of the suite, so CI fails on them like on a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*argv: str) -> None:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_lint() -> None:
    _run(str(BIN / "ruff"), "check", ".")


def test_ruff_format() -> None:
    _run(str(BIN / "ruff"), "format", "--check", ".")


def test_ingestion_is_mypy_strict() -> None:
    _run(str(BIN / "mypy"), "--strict", "ingestion")


def test_ingestion_imports_no_server_code() -> None:
    banned = ("celery", "sqlalchemy", "fastapi", "httpx", "service", "workers", "redis")
    for path in (REPO / "ingestion").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                root = words[1].split(".")[0]
                assert root not in banned, f"{path.name}: {line.strip()}"
