"""OCR slices benchmark: what recognising a long scan in slices on the `ocr` queue
buys over recognising its pages one after another, measured in one run.

The scan: N (default 16) real text pages of a corpus PDF (pdf/r-intro.pdf, pages with
at least 800 characters spread over its body, pages 7-107: its contents and indexes,
rows of dot leaders, say little about OCR and read worst in a CER) rendered to gray
images at 150 dpi and put in an image-only PDF (bench/ocr_support.py); their own text
layer is the ground truth for a CER, a check that the OCR reads the pages at all.

- Baseline: the scan's pages recognised one after another in one fresh process, as
  the ingest task does with no slicing (`open_document` with OCR on, 150 dpi, eng),
  pages/s; its peak RSS (VmHWM). Run before the Longdoc runs and again after them
  (same text, checked): the faster is the reference, as this machine's speed drifts
  by 10-20% over minutes with nothing else on it that /proc/stat shows.
- Longdoc: the scan uploaded to a real stack (a Postgres database and a Redis db of
  its own, the API in its own uvicorn process, one `longdoc worker --queues
  ingest,ocr --concurrency C`, warmed with one text upload), timed from the upload's
  request until the document is `parsed`: pages/s and its ratio to the baseline.
  (a) slicing off (LONGDOC_OCR_INLINE_MAX_PAGES = N): the ingest task recognises
  every page itself, C=1, the cost of the stack alone; (b) slices of
  LONGDOC_OCR_SLICE_PAGES (4) pages at C=1, the cost of slicing and the join (ratio
  below 1), and C=2 (this machine's cores), near 2x less that. `ideal` is what C
  processes can gain with slices handed out in order, every page taking the same
  time (16 or 24 pages: 2.0; 20 would be 5 slices, 1.67). Phases from polling the
  document every 0.2 s (a phase shorter than that can read 0): plan (upload and
  first read, until its OCR progress shows), slices (until every page is done), join
  (the second read and the token counts).
- CPU s: the baseline process's, and the worker's (main and pool processes) from the
  upload until parsed; their ratio is the work slicing adds, whatever else runs
  (though CPU time itself moves by ~10% with the load: shared caches, a busy VM).
  Others' cores: the machine's busy CPU time (/proc/stat) in the run less that, per
  second: the API, Postgres and Redis, and anyone else's work, which on a shared
  machine takes cores from C=2. Each timed run first waits (up to --quiet-wait s)
  for a second in which the machine is near idle.
- Peak RSS: the largest VmHWM of the worker's pool processes, and their VmRSS after
  the warm-up (which holds the tokenizers the baseline does not load).

Every Longdoc run must return the baseline's text and warnings page for page, every
page recognised and the CER under 0.15, or the bench fails: fast garbage is no result.
Default run: ~4 minutes on 2 idle cores. Redis db 12 is flushed (--redis-url).

Usage: python bench/ocr_slices.py [--pages N] [--dpi 150] [--concurrency 1 2]
    [--slice-pages 4] [--source pdf/r-intro.pdf] [--source-pages 7-107]
    [--skip-inline] [--quiet-wait 10]
    [--redis-url URL] [--keep] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as `python -m` would.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e import table
from bench.ocr_slices_support import (
    Stack,
    build_scan,
    busy_s,
    check,
    cpu_s,
    ideal_speedup,
    mismatches,
    own_cpu_s,
    page_range,
    phases,
    pool_pids,
    status_kib,
    text_pages,
    upload_and_wait,
    wait_quiet,
)
from bench.ocr_support import errors
from bench.scratch import scratch_dir
from ingestion.documents.parse import open_document
from service.config import Settings
from service.ocr_options import render_options

REDIS_URL = "redis://127.0.0.1:6379/12"  # not batch.py's 13, e2e.py's 14, the tests' 15
# The stack's, as Settings has it by default (the bench's environment is not passed on).
INLINE_MAX = int(Settings.model_fields["ocr_inline_max_pages"].default)
SLICE_PAGES = int(Settings.model_fields["ocr_slice_pages"].default)
# r-intro's body at 150 dpi: ~0.01-0.05; garbage is far above.
MAX_CER = 0.15


def inline_ocr(scan: str, dpi: int, max_pixels: int) -> dict[str, Any]:
    """The baseline, in the fresh process it runs in: every page of the scan OCR'd in
    turn. Returns (number, text, warnings) per page, seconds, and RSS (MiB)."""
    # The worker's engine (service/ocr_options.py: the tesseract command where it is).
    options = replace(
        render_options(Settings()), mode="auto", languages="eng", dpi=dpi, max_pixels=max_pixels
    )
    base = status_kib(os.getpid(), "VmRSS") / 1024
    b0, c0, t0 = busy_s(), own_cpu_s(), time.perf_counter()
    with open_document(Path(scan), "application/pdf", max_pages=10_000, ocr_options=options) as d:
        pages = [(p.number, p.text, list(p.warnings)) for p in d.pages()]
    seconds, cpu = time.perf_counter() - t0, own_cpu_s() - c0
    others = (busy_s() - b0 - cpu) / seconds
    peak = status_kib(os.getpid(), "VmHWM") / 1024
    return {"pages": pages, "seconds": seconds, "cpu_s": cpu, "others_cores": others,
            "peak_mib": peak, "base_mib": base}  # fmt: skip


def baseline(scan: Path, dpi: int, truth: list[str]) -> dict[str, Any]:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        res = pool.submit(inline_ocr, str(scan), dpi, Settings().ocr_max_pixels).result()
    texts = [t for _, t, _ in res["pages"]]
    check(len(texts) == len(truth), f"the inline read gave {len(texts)} pages of {len(truth)}")
    unread = [n for n, _, w in res["pages"] if not (w and w[0].startswith("ocr: eng "))]
    check(not unread, f"pages not recognised inline: {unread} (is Tesseract installed?)")
    pairs = [errors(t, h) for t, h in zip(truth, texts, strict=True)]
    res["cer"] = sum(d for d, _ in pairs) / max(sum(c for _, c in pairs), 1)
    res["cer_pages"] = [d / max(c, 1) for d, c in pairs]
    check(res["cer"] < MAX_CER, f"inline CER {res['cer']:.3f} is not below {MAX_CER}")
    res["pages_s"] = len(texts) / res["seconds"]
    return res


def longdoc_run(
    stack: Stack, scan: Path, label: str, procs: int, env: dict[str, str], inline: Any,
    quiet_wait_s: float,
) -> dict[str, Any]:  # fmt: skip
    """One worker of `procs` processes on the stack, warmed, then the scan uploaded by
    a new tenant and timed until parsed; checked against the inline pages."""
    n = len(inline["pages"])
    key = stack.new_key(f"{label.replace(' ', '-')}-{procs}")
    load0 = os.getloadavg()[0]
    with stack.worker("ingest,ocr", procs, env, stack.scratch / f"worker-{label}-{procs}.log") as w:
        warm = upload_and_wait(stack.url, key, "warm.txt", b"Warm-up: the worker starts.\n")
        check(warm.doc["status"] == "parsed", f"the warm-up failed: {warm.doc}")
        pids = pool_pids(w.pid)
        check(len(pids) == procs, f"{len(pids)} pool processes, not {procs}")
        base = max(status_kib(p, "VmRSS") for p in pids) / 1024
        quiet = wait_quiet(quiet_wait_s)
        tree = [w.pid, *pids]
        c0, b0 = sum(cpu_s(p) for p in tree), busy_s()
        up = upload_and_wait(stack.url, key, scan.name, scan.read_bytes())
        b1 = busy_s()
        check(pool_pids(w.pid) == pids, f"{label} C={procs}: a pool process was replaced")
        cpu = sum(cpu_s(p) for p in tree) - c0
        peak = max(status_kib(p, "VmHWM") for p in pids) / 1024
    doc, progress = up.doc, up.doc["progress"]
    check(doc["status"] == "parsed", f"{label} C={procs}: the scan ended {doc}")
    check(doc["page_count"] == n, f"{label} C={procs}: {doc['page_count']} pages, not {n}")
    sliced = (progress["ocr_pages_total"], progress["ocr_pages_done"])
    want = (None, None) if label == "inline" else (n, n)
    check(sliced == want, f"{label} C={procs}: OCR progress {sliced}, expected {want}")
    differ = mismatches(inline["pages"], text_pages(stack.url, key, doc["id"]))
    check(not differ, f"{label} C={procs}: the text is not the inline text: {differ[:5]}")
    wall = up.samples[-1].t
    return {
        "label": label, "procs": procs, "wall_s": wall, "pages_s": n / wall,
        "phases": phases(up.samples),
        "cpu_s": cpu, "others_cores": (b1 - b0 - cpu) / wall, "quiet_cores": quiet,
        "peak_mib": peak, "base_mib": base, "polls": len(up.samples),
        "load_before": load0, "load_after": os.getloadavg()[0], "attempts": doc["attempts"],
    }  # fmt: skip


HEAD = (
    "path|C|wall s|pages/s|ratio to baseline|ideal|ratio / ideal|CPU s|CPU / baseline's|"
    "others' cores|plan s|slices s|join s|peak RSS MiB (base)"
)


def rows(res: dict[str, Any]) -> list[list[Any]]:
    ref, slice_pages, n = res["baseline"], res["slice_pages"], len(res["scan"]["pages"])
    out: list[list[Any]] = []
    for when, b in res["baselines"].items():
        out.append(
            [f"baseline: inline, one process ({when})", 1, b["seconds"], b["pages_s"],
             ref["seconds"] / b["seconds"], 1.0, ref["seconds"] / b["seconds"], b["cpu_s"],
             b["cpu_s"] / ref["cpu_s"], b["others_cores"], "", "", "",
             f"{b['peak_mib']:.0f} ({b['base_mib']:.0f})"]
        )  # fmt: skip
    for r in res["runs"]:
        ideal = 1.0 if r["label"] == "inline" else ideal_speedup(n, slice_pages, r["procs"])
        name = "Longdoc, no slices" if r["label"] == "inline" else "Longdoc, slices"
        p = r["phases"]
        out.append(
            [name, r["procs"], r["wall_s"], r["pages_s"], r["ratio"], ideal, r["ratio"] / ideal,
             r["cpu_s"], r["cpu_ratio"], r["others_cores"],
             *("" if p[k] is None else p[k] for k in ("plan", "slices", "join")),
             f"{r['peak_mib']:.0f} ({r['base_mib']:.0f})"]
        )  # fmt: skip
    return out


def _baseline(scan: Path, args: argparse.Namespace, truth: list[str], when: str) -> Any:
    quiet = wait_quiet(args.quiet_wait)
    b = baseline(scan, args.dpi, truth)
    b["quiet_cores"] = quiet
    worst = sorted(zip(b["cer_pages"], range(1, len(truth) + 1), strict=True), reverse=True)
    print(f"baseline ({when}): {b['seconds']:.1f} s, {b['pages_s']:.2f} pages/s, CER "
          f"{b['cer']:.3f} (worst: " + ", ".join(f"scan page {p} {c:.3f}" for c, p in worst[:3])
          + ")", flush=True)  # fmt: skip
    return b


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    scan_path = scratch / f"scan-{args.pages}p-{args.dpi}dpi.pdf"
    scan = build_scan(
        args.corpus, args.source, page_range(args.source_pages), args.pages, args.dpi, scan_path
    )
    print(f"scan: {args.pages} pages of {args.source} at {args.dpi} dpi (pages {scan['pages']}),"
          f" {scan_path.stat().st_size >> 10} KiB", flush=True)  # fmt: skip
    res: dict[str, Any] = {"scan": {k: v for k, v in scan.items() if k != "truth"}}
    res["slice_pages"] = args.slice_pages
    inline = _baseline(scan_path, args, scan["truth"], "before")
    configs = [] if args.skip_inline else [("inline", 1)]
    configs += [("slices", c) for c in args.concurrency]
    env = {"LONGDOC_OCR_DPI": str(args.dpi), "LONGDOC_OCR_LANGUAGES": "eng",
           "LONGDOC_OCR_SLICE_PAGES": str(args.slice_pages),
           "LONGDOC_OCR_INLINE_MAX_PAGES": str(INLINE_MAX)}  # fmt: skip
    res["runs"] = []
    with Stack(scratch, args.redis_url, env) as stack:
        for label, procs in configs:
            # Slicing off: the ingest task recognises every page itself.
            extra = {"LONGDOC_OCR_INLINE_MAX_PAGES": str(args.pages)} if label == "inline" else {}
            r = longdoc_run(stack, scan_path, label, procs, extra, inline, args.quiet_wait)
            res["runs"].append(r)
            print(f"{label} C={procs}: {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s, others' "
                  f"cores {r['others_cores']:.2f}", flush=True)  # fmt: skip
    # Again after, with the stack stopped: the machine's speed drifts (a shared host),
    # and the faster of the two is the reference, so no drift flatters Longdoc.
    after = _baseline(scan_path, args, scan["truth"], "after")
    check(after["pages"] == inline["pages"], "the two inline reads differ: OCR is not repeatable")
    res["baselines"] = {"before": inline, "after": after}
    ref = res["baseline"] = min(inline, after, key=lambda b: float(b["seconds"]))
    for r in res["runs"]:
        r["ratio"], r["cpu_ratio"] = ref["seconds"] / r["wall_s"], r["cpu_s"] / ref["cpu_s"]
    for b in (inline, after):
        b["pages"] = [number for number, _, _ in b["pages"]]  # checked; not in the JSON
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = Path(os.environ.get("LONGDOC_CORPUS_DIR", Settings().cache_dir / "corpus"))
    ap.add_argument("--corpus", type=Path, default=default)
    ap.add_argument("--source", default="pdf/r-intro.pdf", help="text PDF the scan is made of")
    ap.add_argument("--source-pages", default="7-107", help="pages of --source to pick from")
    ap.add_argument("--pages", type=int, default=16, help="pages of the scan")
    ap.add_argument("--dpi", type=int, default=150)
    ap.add_argument("--slice-pages", type=int, default=SLICE_PAGES, help="LONGDOC_OCR_SLICE_PAGES")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--skip-inline", action="store_true", help="no run with slicing off")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="seconds each run may wait for the machine to be idle")  # fmt: skip
    ap.add_argument("--redis-url", default=REDIS_URL, help="flushed: a db of the bench's own")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if args.pages <= INLINE_MAX:  # else nothing would be sliced
        ap.error(f"--pages must be above LONGDOC_OCR_INLINE_MAX_PAGES ({INLINE_MAX})")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, piped
    with scratch_dir("ld-ocr-slices-", args.keep) as scratch:
        res = run(args, scratch)
    res["args"] = {**vars(args), "corpus": str(args.corpus), "json": str(args.json)}
    n, b = len(res["scan"]["pages"]), res["baseline"]
    print(
        f"\n== OCR slices: {n} image-only pages of {args.source} at {args.dpi} dpi, eng; "
        f"slices of {args.slice_pages}; baseline CER {b['cer']:.3f}; one `longdoc worker "
        f"--queues ingest,ocr` of C processes on Postgres + Redis; {os.cpu_count()} cores; "
        "every run's text and warnings = the baseline's, page for page (checked)"
    )
    print(table(HEAD, rows(res)))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return res


if __name__ == "__main__":
    main()
