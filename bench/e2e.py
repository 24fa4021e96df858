"""End-to-end benchmark: Longdoc (upload -> job -> result) against the same requests sent
straight to the vLLM CPU server it uses (SmolLM2 135M), measured in one run.

1. Baseline (a): N distinct requests (real corpus PDFs, several tasks) posted to the
   server's /v1/chat/completions at concurrency 1, 2 and 4; the best is kept. (a) gets
   the page texts for free (PyMuPDF, before timing) and the messages Longdoc would build.
2. Longdoc (b), worker --concurrency = the best (a): the same N requests as uploads with
   a task, timed from the first upload until every job has ended. Rounds alternate (b)
   and (a) at that concurrency; ratio = (b) tokens/s / (a) tokens/s, target >= 0.9.
3. Prefix cache: ten `ask` jobs, one question each, on one ~6,000-token document, one
   after another; first-job vs later-job latency (target >= 3x), and the same ten
   straight to vLLM. The prompt puts the document first and the question after it, so
   every request on one document shares its prefix.

Each timed run starts with vLLM's prefix cache reset, after a warm-up of both paths.
Tokens/s = (prompt + completion tokens, from vLLM's usage) / wall time.
Stacks: "embedded" (SQLite + SQLite broker, `longdoc serve` with no configuration) and
"postgres" (a fresh Postgres database on 127.0.0.1:5432 + Redis db 14).

Usage: python bench/e2e.py [--requests N] [--max-output-tokens T] [--concurrency C]
    [--rounds R] [--stacks embedded,postgres] [--skip-prefix] [--keep] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as `python -m` would.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e_support import (
    CORPUS,
    DOCS,
    FINAL,
    PREFIX_DOC,
    Done,
    Longdoc,
    Req,
    Run,
    page_texts,
    prefix_counters,
    reset_prefix_cache,
    run_direct,
    send_direct,
    start_server,
    throughput_requests,
)
from ingestion.tasks.specs import validate

QUESTIONS = (
    "What is the title of this form?", "Which agency issues the form?",
    "What is the OMB number?", "Who may apply?", "Which law authorizes the collection?",
    "Where is the completed form sent?", "What does the Privacy Act statement say?",
    "How long does the form take to complete?", "What documents must be attached?",
    "When does the OMB approval expire?",
)  # fmt: skip


def ask_requests(max_tokens: int) -> list[Req]:
    return [
        Req(PREFIX_DOC, "ask", validate("ask", {"questions": [q]}), max_tokens) for q in QUESTIONS
    ]


def table(head: str, rows: list[list[Any]]) -> str:
    """A markdown table; `head` is the column names separated by "|"."""
    cells = [[f"{v:,.2f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    lines = [head.split("|"), ["---"] * (head.count("|") + 1), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def run_longdoc(ld: Longdoc, reqs: list[Req], tenant: str) -> Run:
    """All N uploads-with-task sent at once, as a client of a queueing service would."""
    ld.new_key(tenant)
    t0 = time.perf_counter()
    ids = [ld.submit(r) for r in reqs]
    jobs = ld.wait_jobs(ids, poll_s=0.2)
    run = Run(time.perf_counter() - t0, jobs=[jobs[i] for i in ids])
    for job in run.jobs:
        ok = job["status"] == "succeeded"
        res = ld.client.get(f"/v1/jobs/{job['id']}/result").json() if ok else {}
        tokens = (res.get("prompt_tokens") or 0, res.get("completion_tokens") or 0)
        run.done.append(Done(*tokens, job["timings"]["total_s"] or 0.0, ok))
    return run


def breakdown(run: Run) -> list[list[Any]]:
    """Median and max of each job's stages, from Longdoc's own timings."""
    stages: dict[str, list[float]] = {}
    for j in run.jobs:
        t = j["timings"]
        run_s = (_ts(t["finished_at"]) - _ts(t["started_at"])) - (t["prefill_s"] or 0.0)
        stages.setdefault("queued (upload to start)", []).append(t["queued_s"] or 0.0)
        stages.setdefault("kv_wait (admission, in queued)", []).append(t["kv_wait_s"] or 0.0)
        stages.setdefault("prefill (to first token)", []).append(t["prefill_s"] or 0.0)
        stages.setdefault("decode + store", []).append(run_s)
    return [[k, statistics.median(v), max(v)] for k, v in stages.items()]


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def sequential(url: str, send: Callable[[Req], dict[str, Any]], reqs: list[Req]) -> dict[str, Any]:
    """The requests one after another from a cold prefix cache, and the cache's hit rate."""
    reset_prefix_cache(url)
    h0, q0 = prefix_counters(url)
    rows = []
    for r in reqs:
        t0 = time.perf_counter()
        row = send(r)
        rows.append({"latency_s": time.perf_counter() - t0, **row})
    h1, q1 = prefix_counters(url)
    first, later = rows[0]["latency_s"], statistics.median(r["latency_s"] for r in rows[1:])
    counts = {o: sum(r["outcome"] == o for r in rows) for o in sorted({r["outcome"] for r in rows})}
    return {
        "first_s": first,
        "later_median_s": later,
        "speedup": first / later,
        "hit_rate": (h1 - h0) / max(q1 - q0, 1),
        "jobs": rows,
        "outcomes": ", ".join(f"{o} {n}" for o, n in counts.items()),
    }


def prefix_longdoc(ld: Longdoc, url: str, reqs: list[Req]) -> dict[str, Any]:
    ld.new_key("prefix")
    path = CORPUS / PREFIX_DOC
    doc_id = ld.upload(path.name, path.read_bytes())["id"]
    ld.wait(f"/v1/documents/{doc_id}", ("parsed", "failed"), 0.1)  # untimed: parsed first

    def send(r: Req) -> dict[str, Any]:
        job = ld.wait(f"/v1/jobs/{ld.create_job(doc_id, r)}", FINAL, 0.05)
        return {"outcome": job["status"] + (f" ({job['error']['code']})" if job["error"] else "")}

    return sequential(url, send, reqs)


def prefix_direct(url: str, reqs: list[Req], pages: list[tuple[int, str]]) -> dict[str, Any]:
    with httpx.Client(timeout=600) as client:

        def send(r: Req) -> dict[str, Any]:
            d = send_direct(client, url, r, pages)
            return {"outcome": "usable" if d.usable else "unusable", "prompt_tokens": d.prompt}

        return sequential(url, send, reqs)


def print_prefix(pre: dict[str, dict[str, Any]], tokens: int, max_tokens: int) -> None:
    print(
        f"\n== prefix cache: 10 `ask` jobs, one question each, one at a time, on {PREFIX_DOC} "
        f"({tokens} prompt tokens), max_output_tokens {max_tokens}; the document comes first "
        "in the prompt, the question last; target first/later >= 3"
    )
    keys = ("first_s", "later_median_s", "speedup")
    rows = [
        [k, *(v[x] for x in keys), f"{v['hit_rate']:.0%}", v["outcomes"]] for k, v in pre.items()
    ]
    print(table("path|first s|later median s|first/later|prefix cache hit rate|outcome", rows))


def search(url: str, reqs: list[Req], texts: dict[str, Any], levels: list[int]) -> dict[int, Run]:
    runs = {}
    for c in levels:
        reset_prefix_cache(url)
        runs[c] = run_direct(url, reqs, texts, c)
    rows = []
    for c, r in runs.items():
        prompt, completion = sum(d.prompt for d in r.done), sum(d.completion for d in r.done)
        rows.append([c, r.wall_s, prompt, completion, r.tok_s, sum(d.usable for d in r.done)])
    print(table("concurrency|wall s|prompt tok|completion tok|tok/s|usable outputs", rows))
    return runs


def compare(
    ld: Longdoc, url: str, reqs: list[Req], texts: dict[str, Any], c: int, rounds: int
) -> dict[str, Any]:
    """`rounds` pairs of (b) and (a), the order alternating, each from a cold cache."""
    pairs: list[dict[str, Run]] = []
    for i in range(rounds):
        pairs.append({})
        for who in ("b", "a") if i % 2 == 0 else ("a", "b"):
            reset_prefix_cache(url)
            pairs[-1][who] = (
                run_longdoc(ld, reqs, f"round{i}")
                if who == "b"
                else run_direct(url, reqs, texts, c)
            )
    ta = sum(p["a"].tokens for p in pairs) / sum(p["a"].wall_s for p in pairs)
    tb = sum(p["b"].tokens for p in pairs) / sum(p["b"].wall_s for p in pairs)
    rows: list[list[Any]] = []
    for i, p in enumerate(pairs, 1):
        a, b = p["a"], p["b"]
        same = [d.prompt for d in a.done] == [d.prompt for d in b.done]
        ok = sum(d.usable for d in b.done)
        extra = b.wall_s - a.wall_s
        rows.append([i, a.wall_s, a.tok_s, b.wall_s, b.tok_s, b.tok_s / a.tok_s, extra, ok, same])
    rows.append(["all (pooled)", "", ta, "", tb, tb / ta, "", "", ""])
    head = "round|(a) wall s|(a) tok/s|(b) wall s|(b) tok/s|(b)/(a)|(b)-(a) s|(b) succeeded|"
    head += "same prompt tok"
    print(table(head, rows))
    lat = statistics.median(d.latency_s for d in pairs[-1]["a"].done)
    print(
        f"\nLongdoc ({ld.stack}) per-job stages in the last round, s ((a)'s median request "
        f"latency: {lat:.2f} s)"
    )
    print(table("stage|median|max", breakdown(pairs[-1]["b"])))
    return {"ratio": tb / ta, "a_tok_s": ta, "b_tok_s": tb, "jobs": pairs[-1]["b"].jobs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--max-output-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, help="skip the search, use this")
    ap.add_argument("--rounds", type=int, default=2, help="(b)/(a) pairs per stack")
    ap.add_argument("--stacks", default="embedded", help="comma-separated: embedded,postgres")
    ap.add_argument("--prefix-output-tokens", type=int, default=32)
    ap.add_argument("--skip-prefix", action="store_true")
    ap.add_argument("--cpu-cores", help="VLLM_CPU_OMP_THREADS_BIND (default: vLLM's auto)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, piped
    stacks = args.stacks.split(",")
    if not set(stacks) <= {"embedded", "postgres"}:
        ap.error(f"unknown stack in {args.stacks!r}")
    # Short: vLLM's ZMQ socket files live under it, and their paths must stay < 108 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="ld-e2e-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the `finally` runs
    server, ld = start_server(scratch, args.cpu_cores), None
    res: dict[str, Any] = {"args": {**vars(args), "json": str(args.json)}, "stacks": {}}
    try:
        texts = {rel: page_texts(rel) for rel in (*DOCS, PREFIX_DOC)}
        reqs = throughput_requests(args.requests, args.max_output_tokens)
        print(f"vLLM ready in {server.wait_ready(300):.0f} s at {server.url}; scratch {scratch}")
        # Warm-up: grammar compilation, first-call paths; the caches are reset below.
        run_direct(server.url, [Req(r.doc, r.task, r.params, 1) for r in reqs], texts, 4)
        print(
            f"\n== (a) vLLM direct: {len(reqs)} requests over {len(DOCS)} PDFs, max_tokens "
            f"{args.max_output_tokens}; given the page texts (PyMuPDF) for free"
        )
        runs = search(
            server.url, reqs, texts, [args.concurrency] if args.concurrency else [1, 2, 4]
        )
        best = max(runs, key=lambda c: runs[c].tok_s)
        res["search"] = {c: {"wall_s": r.wall_s, "tok_s": r.tok_s} for c, r in runs.items()}
        for stack in stacks:
            ld = Longdoc(scratch / f"ld-{stack}", server.url, best, stack)
            ld.start()
            ld.wait_ready()
            # Warm-up: the worker's first job pays imports and connections.
            warm = ld.upload("w.txt", b"Warm-up.\n", {"task": "summarize", "max_output_tokens": 1})
            ld.wait_jobs([warm["job"]["id"]], 0.2)
            print(
                f"\n== (b) Longdoc ({stack}, worker --concurrency {best}) vs (a) direct at "
                f"concurrency {best}; target (b)/(a) >= 0.9"
            )
            res["stacks"][stack] = compare(ld, server.url, reqs, texts, best, args.rounds)
            if not args.skip_prefix:
                asks = ask_requests(args.prefix_output_tokens)
                res["stacks"][stack]["prefix"] = prefix_longdoc(ld, server.url, asks)
            ld.stop()
        if not args.skip_prefix:
            pre = {f"Longdoc ({s})": res["stacks"][s]["prefix"] for s in stacks}
            asks = ask_requests(args.prefix_output_tokens)
            direct = res["prefix_direct"] = prefix_direct(server.url, asks, texts[PREFIX_DOC])
            pre["vLLM direct"] = direct
            print_prefix(pre, direct["jobs"][0]["prompt_tokens"], args.prefix_output_tokens)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not strand servers
        if ld is not None:
            ld.stop()
        server.stop()
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
