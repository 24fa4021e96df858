"""DOCX parse: the streaming reader against the python-docx tree walk it replaced.

Each parse runs in a fresh process, which reports its CPU seconds, its peak RSS
(VmHWM) and the growth of that peak over the imports. Printed per file: old and
new, the ratios old/new (time, peak RSS), and whether the page texts are equal. Files:
the corpus DOCX and hostile ones built here (empty paragraphs, a large
``document.xml``). The old parser is ``ingestion/documents/docx_doc.py`` at the newest
commit where it still used python-docx, loaded from git; it gets `--old-timeout`
wall seconds per file (the quadratic cases pass it).

Usage: python bench/docx_parse.py [--corpus DIR] [--old-rev REV] [--old-timeout S]
                            [--empty N,N,...] [--big-mib N] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from service.config import Settings  # noqa: E402
from tests.ingestion.hostile_docx import big_body, empty_paragraphs, write_docx  # noqa: E402

CACHE = Settings().cache_dir  # LONGDOC_CACHE_DIR, as the service reads it
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_HWM = "VmHWM:"


def _hwm_kib() -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(_HWM)).split()[1])


def _cpu_s() -> float:
    """CPU seconds, not wall: the bench machine is shared, and waiting for a core is not parsing."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def old_rev() -> str:
    """The newest commit whose DOCX reader imports python-docx."""
    revs = subprocess.run(
        ["git", "-C", str(REPO), "log", "--format=%H", "--", "ingestion/documents/docx_doc.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rev in revs:
        if "import docx\n" in _source(rev):
            return rev
    raise SystemExit("no commit with the python-docx reader in this history")


def _source(rev: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:ingestion/documents/docx_doc.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def child(which: str, path: str, rev: str) -> None:
    """Parse `path` with one parser; print a JSON line with the measurements."""
    import ingestion.documents.docx_doc as new
    from ingestion.types import IngestError

    module: Any = new
    if which == "old":
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(_source(rev))
        spec = importlib.util.spec_from_file_location("ingestion._docx_old", f.name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        os.unlink(f.name)
        import docx  # noqa: F401 - imported before the baseline, like the new reader's lxml
    base = _hwm_kib()
    t0 = _cpu_s()
    digest, pages, error = hashlib.sha256(), 0, None
    try:
        with module.DocxDocument(Path(path), DOCX, max_pages=1_000_000) as doc:
            for page in doc.pages():
                digest.update(page.text.encode("utf-8", "surrogatepass") + b"\f")
                pages += 1
    except IngestError as exc:
        error = exc.code
    seconds = _cpu_s() - t0
    peak = _hwm_kib()
    out = {"s": seconds, "peak_mib": peak / 1024, "grow_mib": (peak - base) / 1024, "pages": pages}
    print(json.dumps({**out, "sha": digest.hexdigest(), "error": error}))


def measure(which: str, path: Path, rev: str, timeout: float) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--child", which, str(path), "--old-rev", rev]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if run.returncode != 0:
        raise SystemExit(f"{which} parser crashed on {path}:\n{run.stderr}")
    result: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return result


def _xml_bytes(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        return sum(i.file_size for i in zf.infolist() if i.filename.endswith(".xml"))


def _row(name: str, size: int, old: dict[str, Any] | None, new: dict[str, Any], cap: float) -> str:
    n = f"{new['pages']} p" if new["error"] is None else new["error"]
    head = f"{name:41} {size / 2**20:5.1f} MiB xml {n:>8}"
    new_part = f"new {new['s']:6.2f} s {new['peak_mib']:5.0f} MiB (+{new['grow_mib']:.0f})"
    if old is None:
        return f"{head}  old > {cap:.0f} s (stopped)          {new_part}"
    same = "equal" if (old["sha"], old["error"]) == (new["sha"], new["error"]) else "DIFFERENT"
    ratio_t = old["s"] / max(new["s"], 1e-6)
    ratio_m = old["peak_mib"] / new["peak_mib"]
    return (
        f"{head}  old {old['s']:6.2f} s {old['peak_mib']:5.0f} MiB (+{old['grow_mib']:.0f})  "
        f"{new_part}  "
        f"time {ratio_t:5.1f}x  peak {ratio_m:4.1f}x  {same}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("LONGDOC_CORPUS_DIR", CACHE / "corpus"))
    )
    ap.add_argument("--old-rev")
    ap.add_argument("--old-timeout", type=float, default=120.0)
    ap.add_argument("--empty", default="10000,40000,160000")
    ap.add_argument("--big-mib", type=int, default=48)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=2, metavar=("WHICH", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    rev = args.old_rev or old_rev()
    if args.child:
        child(args.child[0], args.child[1], rev)
        return
    files = sorted((args.corpus / "docx").glob("*.docx")) + sorted(
        (args.corpus / "derived").glob("*.docx")
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.empty.split(",") if x):
            files.append(write_docx(Path(tmp) / f"empty-{n}.docx", empty_paragraphs(n)))
        if args.big_mib:
            big = Path(tmp) / f"document-xml-{args.big_mib}MiB.docx"
            # big_body paragraphs are ~140 bytes of XML each
            files.append(write_docx(big, big_body(args.big_mib * 2**20 // 140)))
        print(
            f"old = {rev[:10]} (python-docx tree walk), new = this tree; fresh process each",
            flush=True,
        )
        rows = []
        for path in files:
            new = measure("new", path, rev, 3600)
            assert new is not None
            old = measure("old", path, rev, args.old_timeout)
            inside = path.is_relative_to(args.corpus)
            name = str(path.relative_to(args.corpus)) if inside else path.name
            print(_row(name, _xml_bytes(path), old, new, args.old_timeout), flush=True)
            rows.append({"file": name, "old": old, "new": new})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
