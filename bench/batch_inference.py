"""Part 2 of bench/batch.py: N small documents through one archive batch (a), as jobs
one at a time (b), and straight to the vLLM server at its best concurrency (c)."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import httpx

from bench import batch_corpus as corpus_archives
from bench.batch_corpus import Entry
from bench.batch_support import batch_results, line_tokens, post_archive
from bench.e2e import table
from bench.e2e_support import (
    FINAL,
    SERVED,
    Done,
    Longdoc,
    Req,
    Run,
    chat_body,
    reset_prefix_cache,
    run_direct,
    start_server,
)
from ingestion.documents.formats import detect_media_type_path
from ingestion.documents.parse import open_document
from ingestion.tasks.specs import validate

MIN_CHARS = 200  # a document of no text (an empty DOCX) is no summary to time


def page_texts(path: Path) -> list[tuple[int, str]]:
    """The pages as the worker stores them (the same parser, in this process)."""
    with open_document(path, detect_media_type_path(path), max_pages=10_000) as parsed:
        return [(p.number, p.text) for p in parsed.pages()]


def fitting(
    url: str, entries: list[Entry], n: int, max_tokens: int
) -> tuple[list[Entry], list[Req], dict[str, list[tuple[int, str]]]]:
    """The `n` smallest documents whose whole request (messages, as Longdoc builds them,
    counted by the server's /tokenize, plus the output budget) fits its context."""
    params = validate("summarize", {})
    chosen: list[Entry] = []
    reqs: list[Req] = []
    texts: dict[str, list[tuple[int, str]]] = {}
    for e in sorted(entries, key=lambda e: e.size):
        pages = page_texts(e.path)
        if sum(len(t) for _, t in pages) < MIN_CHARS:
            continue
        req = Req(e.name, "summarize", params, max_tokens)
        body = {"model": SERVED, "messages": chat_body(req, pages)["messages"]}
        got = httpx.post(f"{url}/tokenize", json=body, timeout=60).raise_for_status().json()
        if got["count"] + max_tokens <= got["max_model_len"]:
            chosen.append(e)
            reqs.append(req)
            texts[e.name] = pages
        if len(chosen) == n:
            break
    return chosen, reqs, texts


def _uploaded(ld: Longdoc, tenant: str, entries: list[Entry]) -> list[str]:
    """The documents uploaded and parsed by a new tenant, before any timing."""
    ld.new_key(tenant)
    ids = [str(ld.upload(e.name, e.path.read_bytes())["id"]) for e in entries]
    for doc_id in ids:
        ld.wait(f"/v1/documents/{doc_id}", ("parsed", "failed"), 0.1)
    return ids


def via_batch(ld: Longdoc, url: str, entries: list[Entry], tar: Path, budget: int) -> Run:
    """(a): the archive's entries are the tenant's parsed documents again (sha256)."""
    _uploaded(ld, "inference-batch", entries)
    reset_prefix_cache(url)
    t0 = time.perf_counter()
    batch_id = post_archive(ld, tar, {"task": "summarize", "max_output_tokens": budget})
    lines = batch_results(ld, batch_id)
    run = Run(time.perf_counter() - t0)
    run.done = [Done(*line_tokens(line)[:2], 0.0, line_tokens(line)[2]) for line in lines]
    return run


def one_at_a_time(ld: Longdoc, url: str, entries: list[Entry], reqs: list[Req]) -> Run:
    """(b): POST /v1/jobs, waited for, then the next."""
    ids = _uploaded(ld, "inference-single", entries)
    reset_prefix_cache(url)
    t0 = time.perf_counter()
    jobs = [
        ld.wait(f"/v1/jobs/{ld.create_job(d, r)}", FINAL, 0.05)
        for d, r in zip(ids, reqs, strict=True)
    ]
    run = Run(time.perf_counter() - t0, jobs=jobs)
    for job in jobs:
        ok = job["status"] == "succeeded"
        res = ld.client.get(f"/v1/jobs/{job['id']}/result").json() if ok else {}
        run.done.append(Done(res.get("prompt_tokens") or 0, res.get("completion_tokens") or 0,
                             job["timings"]["total_s"] or 0.0, ok))  # fmt: skip
    return run


def _row(name: str, r: Run) -> list[Any]:
    prompt, completion = sum(d.prompt for d in r.done), sum(d.completion for d in r.done)
    return [name, len(r.done), sum(d.usable for d in r.done), r.wall_s, prompt, completion,
            r.tok_s]  # fmt: skip


def inference(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    docs = scratch / "infer-docs"
    pool = corpus_archives.corpus_files(args.corpus) + corpus_archives.python_pages(
        args.corpus, docs
    )
    server, ld = start_server(scratch, args.cpu_cores), None
    try:
        print(f"\nvLLM ready in {server.wait_ready(600):.0f} s at {server.url}")
        entries, reqs, texts = fitting(server.url, pool, args.requests, args.max_output_tokens)
        tar = scratch / "inference.tar"
        corpus_archives.write_tar(entries, tar)
        # Warm-up: first-call paths of the server; the prefix cache is reset before each.
        run_direct(server.url, [Req(r.doc, r.task, r.params, 1) for r in reqs], texts, 4)
        direct: dict[int, Run] = {}
        for c in (int(x) for x in args.levels.split(",")):
            reset_prefix_cache(server.url)
            direct[c] = run_direct(server.url, reqs, texts, c)
        best = max(direct, key=lambda c: direct[c].tok_s)
        stack = args.inference_stack
        ld = Longdoc(scratch / f"infer-{stack}", server.url, args.workers, stack, args.redis_url)
        ld.start()
        ld.wait_ready()
        warm = ld.upload("w.txt", b"Warm-up.\n", {"task": "summarize", "max_output_tokens": 1})
        ld.wait_jobs([warm["job"]["id"]], 0.2)
        a = via_batch(ld, server.url, entries, tar, args.max_output_tokens)
        b = one_at_a_time(ld, server.url, entries, reqs)
    finally:
        if ld is not None:
            ld.stop()
        server.stop()
        shutil.rmtree(docs, ignore_errors=True)
    print(
        f"\n== inference: {len(entries)} smallest documents that fit one request "
        f"({', '.join(e.name for e in entries)}), summarize, max_output_tokens "
        f"{args.max_output_tokens}; Longdoc {stack}, worker --concurrency {args.workers}"
    )
    rows = [_row(f"(c) vLLM direct, concurrency {c}", r) for c, r in direct.items()]
    rows += [_row("(a) one archive batch", a), _row("(b) POST /v1/jobs one at a time", b)]
    print(table("path|requests|usable|wall s|prompt tok|completion tok|tok/s", rows))
    return {
        "requests": len(entries),
        "documents": [e.name for e in entries],
        "best_concurrency": best,
        "direct": {k: {"wall_s": r.wall_s, "tok_s": r.tok_s} for k, r in direct.items()},
        **{k: {"wall_s": r.wall_s, "tok_s": r.tok_s, "tokens": r.tokens,
               "usable": sum(d.usable for d in r.done)}
           for k, r in (("a", a), ("b", b), ("c", direct[best]))},
    }  # fmt: skip
