"""`longdoc route FILE --json` and the service plan alike: on real corpus documents, the
plan the dry run prints and the plan stored for a job on the same file, task, params
and deployment are equal step by step (counts, prompt budget with its page markers and
reduce instruction, every map chunk and reduce group, the reasons).

The service plans on the backends table: here it holds one row per replica of the
deployment the dry run reads, with the figures a refresher would have measured for
it, and the configured KV settings of each (so both sides describe the same servers).
The document is really uploaded and parsed (in this process: no worker runs here);
one case leaves the split to the worker's planner, as the API does for a large text.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from ingestion.capacity.route_plan import Plan, Request
from service.cli.app import cli
from service.config import Settings
from service.db import get_sessionmaker
from service.models import Backend, Job, JobStatus
from tests.api.test_documents import upload
from tests.conftest import _new_key, api_settings, auth, corpus_file
from tests.routing.conftest import counter_for
from workers.ingest.tasks import run_ingest

GEMMA = "google/gemma-4-31B-it"
SCOUT = "meta-llama/Llama-4-Scout-17B-16E-Instruct"
GIB = 1 << 30


def _small(**contexts: int) -> list[dict[str, Any]]:
    models = {"gemma": GEMMA, "scout": SCOUT}
    return [
        {"role": r, "model": models[r], "max_model_len": n, "kv_cache_bytes": 20 * GIB}
        for r, n in contexts.items()
    ]


@dataclass(frozen=True)
class Case:
    doc: str
    task: str
    params: dict[str, Any] | None  # None: the dry run's own (and the job is sent them)
    max_output_tokens: int
    deployment: list[dict[str, Any]] | None  # None: the paper deployment
    kind: str
    by_worker: bool = False  # the API leaves the split to the worker's planner
    pages: str | None = None  # the job's page range (`route --pages`)


CASES = [
    Case("pdf/latex-ltnews01.pdf", "summarize", None, 1024, None, "single"),
    Case(
        "docx/officer-example.docx",
        "ask",
        {"questions": ["Who wrote it?", "What does the first table hold?"]},
        512,
        None,
        "single",
    ),
    Case("pdf/r-intro.pdf", "summarize", None, 2048, _small(gemma=32_768), "map_reduce"),
    # A page range: counted on its own text, one request where the whole is split...
    Case("pdf/r-intro.pdf", "ask", None, 512, _small(gemma=32_768), "single", pages="30-34"),
    # ... and split within itself when it is too long for one.
    Case(
        "pdf/r-intro.pdf",
        "summarize",
        None,
        2048,
        _small(gemma=32_768),
        "map_reduce",
        pages="11-80",
    ),
    Case(
        "text/debian-policy.txt",
        "extract",
        None,
        2_000,
        _small(gemma=16_384),
        "map_reduce",
        by_worker=True,
    ),
    Case(
        "epub/debian-developers-reference.epub",
        "classify",
        None,
        1_000,
        _small(gemma=8_192, scout=24_576),
        "map_reduce",
    ),
]


@pytest.fixture(scope="module")
def key(database: str) -> str:
    counter_for("gemma"), counter_for("scout")  # skip when the tokenizer files are missing
    return _new_key(f"plans-{uuid.uuid4().hex[:6]}")


@contextmanager
def _deployment(case: Case) -> Iterator[tuple[dict[str, str], dict[str, str], Settings]]:
    """The case's deployment in settings (what the dry run reads) and as rows of the
    backends table (what the service plans on); yields row id -> dry-run replica name.
    Rows other tests left are down for the while: they must not take these jobs."""
    if case.deployment is None:
        replicas = [r.model_dump() for r in Settings().deployment]
    else:
        replicas = case.deployment
    tag = uuid.uuid4().hex[:8]
    rows: list[Backend] = []
    configs, names = [], []
    for entry in Settings(deployment=replicas).deployment:
        for n in range(entry.replicas):
            name = f"{entry.role}-{n}"
            url = f"http://127.0.0.1:9/plans-{tag}/{name}"
            names.append(name)
            configs.append(
                {
                    "role": entry.role,
                    "url": url,
                    "model": entry.model,
                    "tp": entry.tp,
                    "kv_dtype": entry.kv_dtype,
                    "in_flight_tokens": entry.in_flight_tokens,
                }
            )
            rows.append(
                Backend(
                    role=entry.role,
                    url=url,
                    model=entry.model,
                    max_model_len=entry.max_model_len,
                    block_size=entry.block_size,
                    kv_capacity_bytes=entry.kv_cache_bytes,
                    capacity_source="measured",
                    healthy=True,
                )
            )
    env = {"LONGDOC_DEPLOYMENT": json.dumps(replicas), "LONGDOC_BACKENDS": json.dumps(configs)}
    if case.by_worker:
        env["LONGDOC_API_SPLIT_MAX_TEXT_BYTES"] = "0"
    with get_sessionmaker()() as s:
        up = list(s.scalars(select(Backend.id).where(Backend.healthy)))
        s.execute(update(Backend).where(Backend.id.in_(up)).values(healthy=False))
        s.add_all(rows)
        s.commit()
        ids = [r.id for r in rows]
    try:
        # The service's settings, handed to the API and the task; the dry run reads the
        # same deployment from its environment, as a `longdoc route` process would.
        settings = Settings(
            deployment=replicas,
            backends=configs,
            **({"api_split_max_text_bytes": 0} if case.by_worker else {}),
        )
        with api_settings(settings):
            yield {str(i): name for i, name in zip(ids, names, strict=True)}, env, settings
    finally:
        with get_sessionmaker()() as s:
            s.execute(delete(Backend).where(Backend.id.in_(ids)))
            s.execute(update(Backend).where(Backend.id.in_(up)).values(healthy=True))
            s.commit()


def _dry_run(case: Case, env: dict[str, str]) -> dict[str, Any]:
    args = ["route", str(corpus_file(case.doc)), "--task", case.task, "--json"]
    args += ["--max-output-tokens", str(case.max_output_tokens)]
    if case.pages is not None:
        args += ["--pages", case.pages]
    if case.params is not None:
        args += ["--params", json.dumps(case.params)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def _stored(client: Any, key: str, case: Case, params: dict[str, Any], settings: Settings) -> Plan:
    """The plan the service stores for a job on the case's document."""
    doc_id = upload(client, key, corpus_file(case.doc)).json()["id"]
    run_ingest(uuid.UUID(doc_id), "test:ingest", settings)
    body = {
        "document_id": doc_id,
        "task": case.task,
        "params": params,
        "max_output_tokens": case.max_output_tokens,
        "pages": case.pages,
    }
    r = client.post("/v1/jobs", headers=auth(key), json=body)
    assert r.status_code == 202, r.text
    job_id = uuid.UUID(r.json()["id"])
    if case.by_worker:
        assert r.json()["plan"] is None and r.json()["status"] == "queued"
        from workers.jobs.tasks import drive

        # One round of the job's task: it plans the job, sends its map requests and
        # returns (a map-reduce job's requests do the work).
        assert drive(job_id, "test:plans", settings)["status"] == "running"
    try:
        with get_sessionmaker()() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.plan is not None, job and job.error_reason
            assert job.status in (JobStatus.running, JobStatus.waiting_for_capacity)
            return job.plan
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))


def _named(req: Request, names: dict[str, str]) -> Request:
    return replace(req, replicas=tuple(names.get(r, r) for r in req.replicas))


def _as_dry_run(plan: Plan, names: dict[str, str]) -> Plan:
    """The service's plan with its replicas called by the dry run's names, and only the
    rejections of this deployment's replicas (rows other tests left are down)."""
    rename = functools.partial(_named, names=names)
    return replace(
        plan,
        request=None if plan.request is None else rename(plan.request),
        map=tuple(replace(s, request=rename(s.request)) for s in plan.map),
        reduce=tuple(
            replace(lv, groups=tuple(replace(g, request=rename(g.request)) for g in lv.groups))
            for lv in plan.reduce
        ),
        reasons=tuple(
            functools.reduce(lambda text, kv: text.replace(*kv), names.items(), reason)
            for reason in plan.reasons
        ),
        rejected=tuple(
            replace(r, replicas=tuple(names[i] for i in r.replicas), reason=r.reason)
            for r in plan.rejected
            if r.replicas and set(r.replicas) <= set(names)
        ),
    )


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c.doc}-{c.task}" + (f"-p{c.pages}" if c.pages else "") for c in CASES]
)
def test_the_dry_run_shows_the_plan_the_service_makes(client: Any, key: str, case: Case) -> None:
    with _deployment(case) as (names, env, settings):
        dry = _dry_run(case, env)
        want = Plan.from_json(dry["plan"])
        got = _as_dry_run(_stored(client, key, case, dry["params"], settings), names)
    assert want.kind == got.kind == case.kind
    assert (got.max_output_tokens, got.document) == (want.max_output_tokens, want.document)
    # The budget for the fixed text: both instructions and the page markers, counted.
    assert got.prompt_tokens == want.prompt_tokens
    assert got.request == want.request
    assert len(got.map) == len(want.map)
    for mine, theirs in zip(got.map, want.map, strict=True):
        assert mine == theirs
    assert [len(lv.groups) for lv in got.reduce] == [len(lv.groups) for lv in want.reduce]
    for mine_lv, theirs_lv in zip(got.reduce, want.reduce, strict=True):
        assert mine_lv == theirs_lv
    assert got.reasons == want.reasons
    assert got.rejected == want.rejected
    assert got == want


def test_the_dry_run_refuses_bad_params() -> None:
    doc = str(corpus_file("pdf/latex-ltnews01.pdf"))
    runner = CliRunner()
    for params, why in [
        ("{", "not JSON"),
        ('{"questions": []}', "questions"),
        ('{"focus": 3}', "params"),
    ]:
        result = runner.invoke(cli, ["route", doc, "--task", "ask", "--params", params])
        assert result.exit_code == 2 and why in result.stderr, result.stderr
