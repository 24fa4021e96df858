"""OCR benchmark (issue 13): Longdoc's OCR path, with each of its engines, against the
`tesseract` command line.

Real text pages from the corpus (PDFs, and the live manual's EPUBs in four languages,
laid out by MuPDF) are rendered to gray images at 150 and 300 dpi and put in image-only
PDFs, the "scans"; their own text layer is the ground truth. Measured in one run:
- CER per document, language, dpi and engine (bench/ocr_support.py) of Longdoc's path
  (`open_document` with OCR on, as a worker parses: render, recognition, cleaning),
  once per engine (`OcrOptions.engine`: ``mupdf``, the Tesseract PyMuPDF links in;
  ``tesseract``, the command on the page MuPDF renders), and of
  `tesseract IMAGE - -l LANG` on the same page images (the baseline, so that a CER is
  read against what the engine does alone); each engine's row holds the same
  command-line run;
- pages/s of each, single-threaded (OMP_THREAD_LIMIT=1 for the command line and for
  the ``tesseract`` engine, whose OpenMP would otherwise take every core: a worker
  runs one page per process), and the ratio Longdoc / command line;
- peak RSS (VmHWM) of the process running Longdoc's path, a fresh one per document,
  dpi and engine, with what it held before the first page (Python, PyMuPDF: the
  "base"), and the largest of the command-line processes (each started from a small
  launcher). With the ``tesseract`` engine, Tesseract's memory is its command's, as
  in the CLI column: the Longdoc column is the render and Python only.

Our OCR renders each scan at the scan's dpi, so both recognise the same pixels.
Default: 2 pages per document (~4 minutes on 2 cores); --pages N for more. A language
whose data is not installed (Spanish, often) is skipped, as is a missing corpus file.

Usage: python bench/ocr.py [--corpus DIR] [--pages N] [--dpi 150 300] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pymupdf

if __package__ in (None, ""):
    # Run as a file: make the repository root importable, as `python -m` would.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.e2e import table
from bench.ocr_support import errors, image_only_pdf, page_image
from ingestion.documents.ocr import OcrEngine, OcrOptions, installed_languages
from ingestion.documents.parse import open_document
from service.config import Settings

# (corpus file, media type, Tesseract language): the live manual is one text in four.
DOCUMENTS = [
    ("pdf/r-intro.pdf", "application/pdf", "eng"),
    ("pdf/fhs-3.0.pdf", "application/pdf", "eng"),
    ("epub/live-manual.en.epub", "application/epub+zip", "eng"),
    ("epub/live-manual.de.epub", "application/epub+zip", "deu"),
    ("epub/live-manual.fr.epub", "application/epub+zip", "fra"),
    ("epub/live-manual.es.epub", "application/epub+zip", "spa"),
]
# A page with less text says little about a CER.
MIN_CHARS = 800
ENGINES: tuple[OcrEngine, ...] = ("mupdf", "tesseract")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field))
    return int(line.split()[1]) / 1024


def pick_pages(doc: Any, n: int) -> list[int]:
    """`n` pages spread over the document, each with at least MIN_CHARS of text."""
    full = [i for i in range(doc.page_count) if len(doc[i].get_text().strip()) >= MIN_CHARS]
    if len(full) <= n:
        return full
    step = len(full) / n
    return [full[int(step * k + step / 2)] for k in range(n)]


def longdoc_ocr(scan: str, lang: str, dpi: int, engine: OcrEngine) -> dict[str, Any]:
    """Our path on an image-only PDF, in the process it runs in (a fresh one)."""
    options = OcrOptions(mode="auto", languages=lang, dpi=dpi, max_pixels=10**9, engine=engine)
    base = _status_mib("VmRSS")
    texts, seconds, warnings = [], [], []
    with open_document(Path(scan), "application/pdf", max_pages=10_000, ocr_options=options) as d:
        pages = d.pages()
        while True:
            t0 = time.perf_counter()
            page = next(pages, None)
            if page is None:
                break
            seconds.append(time.perf_counter() - t0)
            texts.append(page.text)
            warnings.append(list(page.warnings))
    peak = _status_mib("VmHWM")
    return {
        "texts": texts,
        "seconds": seconds,
        "warnings": warnings,
        "hwm_mib": peak,
        "base_mib": base,
    }


# Starts the command and reports its exit code, peak RSS and seconds. From a small
# process of its own: a child's ru_maxrss starts at its parent's RSS (the high-water
# mark survives fork and exec), and ours holds the rendered documents.
_LAUNCH = (
    "import json,os,sys,time;t=time.perf_counter();"
    "p=os.posix_spawnp(sys.argv[1],sys.argv[1:],os.environ);_,s,u=os.wait4(p,0);"
    "print(json.dumps([os.waitstatus_to_exitcode(s),u.ru_maxrss,time.perf_counter()-t]))"
)


def cli_ocr(images: list[Path], lang: str, dpi: int) -> dict[str, Any]:
    """`tesseract` on each image, its text written beside it."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    texts, seconds, peak_kib = [], [], 0
    for image in images:
        base = image.parent / image.stem  # tesseract appends .txt
        cmd = ["tesseract", str(image), str(base), "-l", lang, "--dpi", str(dpi)]
        out = subprocess.run(
            [sys.executable, "-c", _LAUNCH, *cmd], env=env, capture_output=True, text=True
        )
        code, kib, took = json.loads(out.stdout)
        if code:
            raise RuntimeError(f"{' '.join(cmd)} exited with {code}: {out.stderr[-500:]}")
        seconds.append(took)
        peak_kib = max(peak_kib, kib)
        texts.append(Path(f"{base}.txt").read_text(encoding="utf-8"))
    return {"texts": texts, "seconds": seconds, "peak_mib": peak_kib / 1024}


def run(corpus: Path, n_pages: int, dpis: list[int], work: Path) -> list[dict[str, Any]]:
    rows = []
    installed = installed_languages()
    for rel, media_type, lang in DOCUMENTS:
        path = corpus / rel
        if not path.is_file():
            print(f"{rel}: not in the corpus (make corpus), skipped", file=sys.stderr)
            continue
        if lang not in installed:
            print(f"{rel}: Tesseract has no {lang} data here, skipped", file=sys.stderr)
            continue
        src = pymupdf.open(path, filetype=media_type.split("/")[-1].split("+")[0])
        numbers = pick_pages(src, n_pages)
        pages = [src[i] for i in numbers]
        for dpi in dpis:
            scan = work / f"{path.stem}.{dpi}.pdf"
            truth = image_only_pdf(pages, dpi, scan)
            images = []
            for k, page in enumerate(pages):
                images.append(work / f"{path.stem}.{dpi}.{k}.png")
                page_image(page, dpi).save(images[-1])
            ours = {}
            for engine in ENGINES:
                # Fresh per run: the peak RSS is this run's, not the bench's.
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                    ours[engine] = pool.submit(longdoc_ocr, str(scan), lang, dpi, engine).result()
            theirs = cli_ocr(images, lang, dpi)
            for engine in ENGINES:
                rows.append(_row(rel, lang, dpi, engine, numbers, truth, ours[engine], theirs))
                print(" ".join(str(c) for c in cells(rows[-1])), file=sys.stderr, flush=True)
        src.close()
    return rows


def _row(
    rel: str,
    lang: str,
    dpi: int,
    engine: OcrEngine,
    numbers: list[int],
    truth: list[str],
    ours: Any,
    theirs: Any,
) -> dict[str, Any]:
    def edits(texts: list[str]) -> tuple[int, int]:
        pairs = [errors(t, h) for t, h in zip(truth, texts, strict=True)]
        return sum(d for d, _ in pairs), sum(n for _, n in pairs)

    recognised = sum(any(w.startswith("ocr:") for w in ws) for ws in ours["warnings"])
    (ours_edits, reference), (cli_edits, _) = edits(ours["texts"]), edits(theirs["texts"])
    return {
        "document": rel,
        "lang": lang,
        "dpi": dpi,
        "engine": engine,
        "pages": [n + 1 for n in numbers],
        "chars": sum(len(t) for t in truth),
        "reference_chars": reference,  # normalised, what a CER divides by
        "recognised": recognised,
        "edits_longdoc": ours_edits,
        "edits_cli": cli_edits,
        "cer_longdoc": ours_edits / max(reference, 1),
        "cer_cli": cli_edits / max(reference, 1),
        "pages_s_longdoc": len(truth) / sum(ours["seconds"]),
        "pages_s_cli": len(truth) / sum(theirs["seconds"]),
        "peak_mib_longdoc": ours["hwm_mib"],
        "base_mib_longdoc": ours["base_mib"],
        "peak_mib_cli": theirs["peak_mib"],
    }


HEAD = (
    "document|lang|dpi|engine|pages|CER Longdoc|CER CLI|pages/s Longdoc|pages/s CLI|ratio|"
    "peak MiB Longdoc (base)|peak MiB CLI"
)


def cells(r: dict[str, Any]) -> list[Any]:
    return [
        r["document"], r["lang"], r["dpi"], r["engine"], f"{r['recognised']}/{len(r['pages'])}",
        f"{r['cer_longdoc']:.3f}", f"{r['cer_cli']:.3f}",
        r["pages_s_longdoc"], r["pages_s_cli"], r["pages_s_longdoc"] / r["pages_s_cli"],
        f"{r['peak_mib_longdoc']:.0f} ({r['base_mib_longdoc']:.0f})", f"{r['peak_mib_cli']:.0f}",
    ]  # fmt: skip


def summary(rows: list[dict[str, Any]], dpis: list[int]) -> list[str]:
    """Per dpi and engine: pages/s of Longdoc and of the CLI over all pages (time
    summed), their ratio, and both CERs over all characters."""
    lines = []
    for dpi in dpis:
        for engine in ENGINES:
            at = [r for r in rows if r["dpi"] == dpi and r["engine"] == engine]
            if not at:
                continue
            n = sum(len(r["pages"]) for r in at)
            ours = n / sum(len(r["pages"]) / r["pages_s_longdoc"] for r in at)
            cli = n / sum(len(r["pages"]) / r["pages_s_cli"] for r in at)
            chars = max(sum(r["reference_chars"] for r in at), 1)
            cer_ours = sum(r["edits_longdoc"] for r in at) / chars
            cer_cli = sum(r["edits_cli"] for r in at) / chars
            lines.append(
                f"{dpi} dpi, {n} pages, engine {engine}: Longdoc {ours:.2f} pages/s, "
                f"CLI {cli:.2f} pages/s, ratio {ours / cli:.2f}; "
                f"CER Longdoc {cer_ours:.3f}, CLI {cer_cli:.3f}"
            )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    default = Path(os.environ.get("LONGDOC_CORPUS_DIR", Settings().cache_dir / "corpus"))
    ap.add_argument("--corpus", type=Path, default=default)
    ap.add_argument("--pages", type=int, default=2, help="pages per document")
    ap.add_argument("--dpi", type=int, nargs="+", default=[150, 300])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="longdoc-ocr-bench.") as tmp:
        rows = run(args.corpus, args.pages, args.dpi, Path(tmp))
    print(f"== OCR: Longdoc vs tesseract CLI, {args.pages} pages per document, 1 thread each")
    print(table(HEAD, [cells(r) for r in rows]))
    for line in summary(rows, args.dpi):
        print(line)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
