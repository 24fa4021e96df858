"""Batch benchmark (issue 11): archive batches against their baselines, in one run.

1. Ingest: an archive of real documents (default 200: the corpus's smallest PDF, DOCX,
   EPUB, HTML and text files, and pages of the Python docs split into one text each;
   `--docs 0`, all 558) as one archive batch, from the upload's first byte until every
   entry's document is parsed or failed, on each stack, worker --concurrency W. No
   backend is configured: the jobs fail `no_backend` after the parse, so this is the
   ingest path alone. Baseline: the same documents parsed and counted (both tokenizers)
   one after another in this process as bench/ingest.py does, times W.
   Ratio = batch rate / (single rate x W), in documents/min and pages/s.
2. Inference (SmolLM2 vLLM CPU server): N of the smallest documents that fit one
   request, task summarize: (a) one archive batch of them, (b) the same as jobs sent
   one at a time through POST /v1/jobs, each waited for, (c) straight to vLLM at the
   best of the concurrency levels, given the page texts for free. Documents are
   uploaded and parsed before (a) and (b) are timed (the archive's entries are those
   documents again, by sha256); vLLM's prefix cache is reset before each. Tokens/s =
   (prompt + completion tokens, vLLM's usage) / wall; ratios (a)/(c), (b)/(c), (a)/(b).
3. Memory: the API alone (uvicorn, embedded stack, no worker), a fresh process per
   size: peak RSS (process and children, sampled every 50 ms) while a 1 GiB tar of
   corpus files streams in through POST /v1/batches/archive, against a 10 MiB one.

Stacks: "embedded" (SQLite) and "postgres" (a fresh Postgres database + Redis,
`--redis-url`, whose db is flushed). Never asserts: prints tables, and the summary.

Usage: python bench/batch.py [--docs 200] [--workers 2] [--requests 8]
    [--stacks embedded,postgres] [--inference-stack postgres] [--large-mib 1024]
    [--small-mib 10] [--skip-ingest] [--skip-inference] [--skip-memory] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as `python -m` would.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import batch_corpus as corpus_archives
from bench.batch_inference import inference
from bench.batch_support import Ingested, batch_ingest, single_ingest, upload_peak
from bench.e2e import table
from bench.e2e_support import CACHE, Longdoc
from bench.load import prepare, stack_env
from bench.load_support import api_process
from bench.scratch import scratch_dir

PG_REDIS = "redis://127.0.0.1:6379/13"  # not e2e.py's 14, nor the tests' 15


def ingest_longdoc(scratch: Path, stack: str, workers: int, redis_url: str) -> Longdoc:
    """`longdoc serve` with no backend and the default tokenizer files (the worker
    counts both roles, as the baseline does), warmed with one parse per worker."""
    ld = Longdoc(scratch / f"ingest-{stack}", "http://127.0.0.1:9", workers, stack, redis_url)
    ld.env["LONGDOC_BACKENDS"] = "[]"
    ld.env.pop("LONGDOC_TOKENIZERS")
    ld.start()
    ids = []
    for i in range(workers):  # the first upload also waits for the API to answer
        body = f"Warm-up document {i}: the worker loads its tokenizers.\n".encode()
        ids.append(_retry_upload(ld, f"warm-{i}.txt", body))
    for doc_id in ids:
        ld.wait(f"/v1/documents/{doc_id}", ("parsed", "failed"), 0.2)
    return ld


def _retry_upload(ld: Longdoc, name: str, data: bytes, tries: int = 240) -> str:
    for _ in range(tries):
        if ld.proc is not None and ld.proc.poll() is not None:
            raise RuntimeError(f"longdoc serve exited; see {ld.data_dir / 'serve.log'}")
        try:
            return str(ld.upload(name, data)["id"])
        except httpx.TransportError:
            time.sleep(0.5)
    raise RuntimeError(f"the API did not answer; see {ld.data_dir / 'serve.log'}")


def run_ingest(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    files = corpus_archives.corpus_files(args.corpus)
    pages = corpus_archives.python_pages(args.corpus, scratch / "docs")
    entries = corpus_archives.select(files, pages, args.docs)
    tar = scratch / "ingest.tar"
    corpus_archives.write_tar(entries, tar)
    kinds: dict[str, int] = {}
    for e in entries:
        kinds[e.name.split("/")[0]] = kinds.get(e.name.split("/")[0], 0) + 1
    print(f"\n== ingest: {len(entries)} documents ({kinds}), tar {tar.stat().st_size >> 20} MiB")
    single = single_ingest(entries)
    print(f"single (in-process, one at a time): {single}")
    runs: dict[str, Ingested] = {}
    for stack in args.stacks.split(","):
        ld = ingest_longdoc(scratch, stack, args.workers, args.redis_url)
        try:
            ld.new_key(f"ingest-{stack}")
            runs[stack] = batch_ingest(ld, tar, len(entries))
        finally:
            ld.stop()
        print(f"batch ({stack}, W={args.workers}): {runs[stack]}")
    w = args.workers
    rows: list[list[Any]] = [
        ["single x1", single.docs, single.pages, single.failed, single.wall_s,
         single.docs_min, single.pages_s, "", ""],
        [f"single x{w} (baseline)", "", "", "", "", single.docs_min * w, single.pages_s * w,
         "", ""],
    ]  # fmt: skip
    for stack, r in runs.items():
        rows.append([f"batch {stack}, W={w}", r.docs, r.pages, r.failed, r.wall_s, r.docs_min,
                     r.pages_s, r.docs_min / (single.docs_min * w),
                     r.pages_s / (single.pages_s * w)])  # fmt: skip
    print(table("path|docs|pages|failed|wall s|docs/min|pages/s|docs ratio|pages ratio", rows))
    shutil.rmtree(scratch / "docs", ignore_errors=True)
    tar.unlink()
    return {"documents": len(entries), "kinds": kinds, "single": vars(single),
            "batch": {s: vars(r) for s, r in runs.items()}, "workers": w}  # fmt: skip


def run_memory(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with stack_env("embedded", scratch / "mem") as env:
        key = prepare(env)
        limit = str(4 * args.large_mib << 20)
        env = {**env, "LONGDOC_ARCHIVE_MAX_UPLOAD_BYTES": limit,
               "LONGDOC_ARCHIVE_MAX_TOTAL_BYTES": limit,
               "LONGDOC_ARCHIVE_MAX_ENTRIES": "1000000"}  # fmt: skip
        for mib in (args.small_mib, args.large_mib):
            tar = scratch / f"mem-{mib}.tar"
            try:
                corpus_archives.filler_tar(args.corpus, tar, mib << 20)
                with api_process(env, scratch / f"api-{mib}.log") as url:
                    out[f"{mib} MiB"] = upload_peak(url, key, tar)
            finally:
                tar.unlink(missing_ok=True)
                shutil.rmtree(scratch / "mem" / "embedded" / "blobs", ignore_errors=True)
    print("\n== memory: the API's RSS while an archive streams in (fresh API per size)")
    keys = ("bytes", "entries", "idle_mib", "peak_mib", "samples", "upload_s", "mib_s")
    rows = [[k, *(v[x] for x in keys)] for k, v in out.items()]
    print(table("archive|bytes|entries|idle MiB|peak MiB|samples|upload s|MiB/s", rows))
    return out


def summary(res: dict[str, Any]) -> str:
    rows: list[list[Any]] = []
    if ing := res.get("ingest"):
        w, single = ing["workers"], ing["single"]
        base_d = 60 * single["docs"] / single["wall_s"] * w
        base_p = single["pages"] / single["wall_s"] * w
        for stack, r in ing["batch"].items():
            d, p = 60 * r["docs"] / r["wall_s"], r["pages"] / r["wall_s"]
            rows.append([f"ingest {stack} docs/min (W={w})", d, base_d, d / base_d])
            rows.append([f"ingest {stack} pages/s (W={w})", p, base_p, p / base_p])
    if inf := res.get("inference"):
        a, b, c = (inf[k]["tok_s"] for k in ("a", "b", "c"))
        n, cc = inf["requests"], inf["best_concurrency"]
        rows.append([f"(a) archive batch vs (c) vLLM direct c={cc}, tok/s, {n} docs", a, c, a / c])
        rows.append([f"(b) jobs one at a time vs (c) vLLM direct c={cc}, tok/s", b, c, b / c])
        rows.append(["(a) archive batch vs (b) jobs one at a time, tok/s", a, b, a / b])
    if mem := res.get("memory"):
        small, large = mem.values()
        label = " vs ".join(mem)
        rows.append([f"API peak RSS MiB, {label} archive", large["peak_mib"], small["peak_mib"],
                     large["peak_mib"] / small["peak_mib"]])  # fmt: skip
    return table("measure|Longdoc|baseline|ratio", rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = Path(os.environ.get("LONGDOC_CORPUS_DIR", CACHE / "corpus"))
    ap.add_argument("--corpus", type=Path, default=default)
    ap.add_argument("--docs", type=int, default=200, help="archive documents (0: all)")
    ap.add_argument("--workers", type=int, default=2, help="worker --concurrency W")
    ap.add_argument("--requests", type=int, default=8, help="inference documents N")
    ap.add_argument("--max-output-tokens", type=int, default=16)
    ap.add_argument("--levels", default="1,2,4", help="vLLM direct concurrencies tried")
    ap.add_argument("--stacks", default="embedded,postgres", help="ingest stacks")
    ap.add_argument("--inference-stack", default="postgres", choices=("embedded", "postgres"))
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--small-mib", type=int, default=10)
    ap.add_argument("--redis-url", default=PG_REDIS, help="flushed: a db of the bench's own")
    ap.add_argument("--cpu-cores", help="VLLM_CPU_OMP_THREADS_BIND (default: vLLM's auto)")
    for part in ("ingest", "inference", "memory"):
        ap.add_argument(f"--skip-{part}", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not set(args.stacks.split(",")) <= {"embedded", "postgres"}:
        ap.error(f"unknown stack in {args.stacks!r}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, piped
    res: dict[str, Any] = {"args": {**vars(args), "corpus": str(args.corpus),
                                    "json": str(args.json)}}  # fmt: skip
    # Short: vLLM's ZMQ socket files live under it, and their paths must stay < 108 bytes.
    with scratch_dir("ld-batch-", args.keep) as scratch:
        if not args.skip_memory:
            res["memory"] = run_memory(args, scratch)
        if not args.skip_ingest:
            res["ingest"] = run_ingest(args, scratch)
        if not args.skip_inference:
            res["inference"] = inference(args, scratch)
    print("\n== summary (ratios against baselines measured in this run)")
    print(summary(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return res


if __name__ == "__main__":
    main()
