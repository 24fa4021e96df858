"""`longdoc keys create | list | revoke` through the real CLI on the test Postgres, a
revoked key refused by the API at once, and the top-level options taken after every
command name.

The commands run in this process (the typer app itself, its exit code and both
streams): a subprocess would spend more than a second per call in imports and prove
nothing more. The one test about the entry point and its environment runs
`python -m service.cli.app` as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from service.cli.app import cli
from tests.conftest import REPO, auth

Client = Any
LONGDOC = [sys.executable, "-m", "service.cli.app"]


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


def longdoc(*args: str) -> Done:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Done(result.exit_code, result.stdout, result.stderr)


def longdoc_process(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LONGDOC, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )


def _create(tenant: str, *extra: str) -> str:
    done = longdoc("keys", "create", "--tenant", tenant, *extra)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("ld_"), done.stdout
    return key


def _listed(tenant: str) -> list[dict[str, Any]]:
    done = longdoc("keys", "list", "--tenant", tenant, "--json")
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


def test_list_shows_every_key_of_a_tenant_but_never_a_secret(database: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    admin = _create(tenant, "--name", "ops", "--admin")
    plain = _create(tenant)
    rows = _listed(tenant)
    assert [(r["prefix"], r["name"], r["admin"]) for r in rows] == [
        (admin[:15], "ops", True),
        (plain[:15], None, False),
    ]
    assert all(r["tenant"] == tenant and r["created_at"] and r["revoked_at"] is None for r in rows)
    table = longdoc("keys", "list", "--tenant", tenant)
    assert table.returncode == 0, table.stderr
    assert admin[:15] in table.stdout and plain[:15] in table.stdout
    for out in (table.stdout, json.dumps(rows)):
        assert admin not in out and plain not in out and admin[15:] not in out


@pytest.mark.parametrize("name_by", ["prefix", "id", "key"])
def test_a_revoked_key_is_refused_at_once(
    client: Client, api_key: str, database: str, name_by: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    key = _create(tenant)
    assert client.get("/v1/documents", headers=auth(key)).status_code == 200
    (row,) = _listed(tenant)
    assert row["last_used_at"] is not None  # the request above used it
    ref = {"prefix": row["prefix"], "id": row["id"], "key": key}[name_by]
    done = longdoc("keys", "revoke", ref)
    assert done.returncode == 0, done.stderr
    assert "revoked" in done.stdout and key not in done.stdout
    refused = client.get("/v1/documents", headers=auth(key))
    assert refused.status_code == 401, refused.text
    assert client.get("/v1/backends", headers=auth(key)).status_code == 401
    (row,) = _listed(tenant)
    assert row["revoked_at"] is not None
    again = longdoc("keys", "revoke", ref)
    assert again.returncode == 0 and "already revoked" in again.stdout, again.stdout
    # Other keys are untouched.
    assert client.get("/v1/documents", headers=auth(api_key)).status_code == 200


def test_revoking_an_unknown_key_fails_and_revokes_nothing(database: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    _create(tenant)
    done = longdoc("keys", "revoke", "ld_nosuchprefix1")
    assert done.returncode == 1 and "no key" in done.stderr, (done.stdout, done.stderr)
    assert [r["revoked_at"] for r in _listed(tenant)] == [None]


# --- top-level options after any command ------------------------------------------------


def _paths(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under the root, as the words that name it."""
    out = [path] if path else []
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        out += _paths(sub, (*path, name))
    return out


ROOT = typer.main.get_command(cli)
TOP_LEVEL = [opt for p in ROOT.params for opt in p.opts]  # type: ignore[attr-defined]


def test_the_cli_has_top_level_options_and_commands() -> None:
    assert "--data-dir" in TOP_LEVEL
    assert {("keys", "create"), ("keys", "list"), ("keys", "revoke"), ("serve",)} <= set(
        _paths(ROOT)
    )


@pytest.mark.parametrize("path", _paths(ROOT), ids=" ".join)
@pytest.mark.parametrize("option", TOP_LEVEL)
def test_every_command_takes_the_top_level_options(
    path: tuple[str, ...], option: str, tmp_path: Path
) -> None:
    done = CliRunner().invoke(cli, [*path, option, str(tmp_path), "--help"])
    assert done.exit_code == 0, done.output
    assert option in done.output


def test_data_dir_after_the_command_is_the_data_dir(tmp_path: Path) -> None:
    # No database URL: the embedded SQLite database in the data directory is used.
    env = {k: v for k, v in os.environ.items() if k != "LONGDOC_DATABASE_URL"}
    created = longdoc_process(
        "keys", "create", "--tenant", "t", "--data-dir", str(tmp_path), env=env
    )
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "longdoc.db").is_file()
    listed = longdoc_process("keys", "list", "--json", "--data-dir", str(tmp_path), env=env)
    assert listed.returncode == 0, listed.stderr
    assert [r["tenant"] for r in json.loads(listed.stdout)] == ["t"]
