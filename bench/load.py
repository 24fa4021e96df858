"""Concurrent reads against the API in its own uvicorn process, on loopback: the
database pool as it was (5 + 10 overflow, 30 s timeout, no bound on requests let in)
against the pool and request limits as configured now, measured in the same run.

    python bench/load.py [--requests 500] [--docs 50] [--stacks postgres,embedded]

Prints, per stack and configuration, answers by status, p50/p99 latency, requests
per second, and the new/old ratios. Not a test: tests/api/test_load.py asserts counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from bench.load_support import Burst, api_process, burst, seed_documents

PG_ADMIN = os.environ.get("LONGDOC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
# The old defaults, as settings: SQLAlchemy's pool, and no bound on requests let in.
CONFIGS = {
    "old pool": {
        "LONGDOC_DB_POOL_SIZE": "5",
        "LONGDOC_DB_MAX_OVERFLOW": "10",
        "LONGDOC_DB_POOL_TIMEOUT_S": "30",
        "LONGDOC_MAX_CONCURRENT_REQUESTS": "100000",
    },
    "new (defaults)": {},
}


@contextmanager
def stack_env(stack: str, scratch: Path) -> Iterator[dict[str, str]]:
    """The environment of one stack; Postgres gets a database of its own, dropped after.
    The API only sends tasks (no worker runs), so the broker is the embedded one."""
    env = {"LONGDOC_DATA_DIR": str(scratch / stack), "LONGDOC_DATABASE_URL": ""}
    env["LONGDOC_BROKER_URL"] = ""
    if stack == "embedded":
        yield env
        return
    name = f"longdoc_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield {**env, "LONGDOC_DATABASE_URL": f"{base}/{name}"}
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare(env: dict[str, str]) -> str:
    """Migrate, and create a key; in this process, with the stack's settings."""
    from service.config import Settings
    from service.db import sessions_for
    from service.keys import create_key
    from service.migrate import upgrade

    settings = Settings(**{k.removeprefix("LONGDOC_").lower(): v for k, v in env.items()})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with sessions_for(settings) as sessions, sessions() as session:
        return create_key(session, f"load-{uuid.uuid4().hex[:6]}")


def row(name: str, b: Burst) -> list[str]:
    codes = " ".join(f"{c}:{n}" for c, n in sorted(b.statuses.items()))
    fails = sum(b.errors.values())
    rate = len(b.latencies) / b.wall_s if b.wall_s else 0.0
    return [name, codes, str(b.server_errors), str(fails), f"{b.quantile(0.5):.2f}",
            f"{b.quantile(0.99):.2f}", f"{rate:.1f}"]  # fmt: skip


def table(rows: list[list[str]]) -> str:
    head = ["config", "answers", "5xx", "no answer", "p50 s", "p99 s", "answered/s"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    return "\n".join([lines[0], "-+-".join("-" * w for w in widths), *lines[1:]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--docs", type=int, default=50, help="documents listed per request")
    ap.add_argument("--stacks", default="postgres,embedded")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    scratch = Path(tempfile.mkdtemp(prefix="ld-load-"))
    try:
        for stack in args.stacks.split(","):
            with stack_env(stack, scratch) as env:
                key = prepare(env)
                results: dict[str, Burst] = {}
                for name, overrides in CONFIGS.items():
                    log = scratch / f"{stack}-{len(results)}.log"
                    with api_process({**env, **overrides}, log) as url:
                        if not results:
                            seed_documents(url, key, args.docs)
                        results[name] = burst(url, key, args.requests, "/v1/documents")
                old, new = results.values()
                print(f"\n== {stack}: {args.requests} concurrent GET /v1/documents "
                      f"({args.docs} documents each)")  # fmt: skip
                print(table([row(n, b) for n, b in results.items()]))
                p99 = new.quantile(0.99) / old.quantile(0.99) if old.latencies else float("nan")
                ok = (new.statuses[200] / old.statuses[200]) if old.statuses[200] else float("inf")
                print(f"new/old: p99 x{p99:.2f}, 200 answers x{ok:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
