"""Converts real corpus documents into the derived ones (long DOCX, an encrypted PDF).

Run by the corpus venv's python (pymupdf and pypandoc_binary pinned there), by
fetch_corpus.py: corpus_derive.py CORPUS_DIR WORK_DIR NAME...
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pymupdf
import pypandoc  # type: ignore[import-not-found]

LIVE_ODT = "deb-live-manual-odf/usr/share/doc/live-manual/odt"


def _pandoc(src: Path, fmt: str, out: Path) -> None:
    tmp = out.with_name(out.stem + ".tmp.docx")  # pandoc picks the writer by extension
    subprocess.run(
        [pypandoc.get_pandoc_path(), "--quiet", "-f", fmt, "-t", "docx", "-o", str(tmp), str(src)],
        check=True,
    )
    tmp.replace(out)


def _encrypted(src: Path, out: Path) -> None:
    """AES-256 with a user password: opening it needs `user`, so parsing must refuse."""
    tmp = out.with_name(out.name + ".tmp")
    with pymupdf.open(src) as doc:  # type: ignore[no-untyped-call]
        doc.save(
            tmp,
            encryption=pymupdf.PDF_ENCRYPT_AES_256,  # type: ignore[attr-defined]
            user_pw="user",
            owner_pw="owner",
            permissions=int(pymupdf.PDF_PERM_PRINT),  # type: ignore[attr-defined]
            garbage=1,
            deflate=True,
        )
    tmp.replace(out)


def build(name: str, corpus: Path, work: Path) -> None:
    out = corpus / name
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = Path(name).name
    if stem.startswith("live-manual."):
        lang = stem.split(".")[1]
        _pandoc(work / LIVE_ODT / f"live-manual.{lang}.odt", "odt", out)
    elif stem.endswith(".docx"):
        _pandoc(corpus / "epub" / stem.replace(".docx", ".epub"), "epub", out)
    elif stem == "r-intro.aes256-userpw.pdf":
        _encrypted(corpus / "pdf/r-intro.pdf", out)
    else:
        raise SystemExit(f"corpus_derive.py: no recipe for {name}")
    print(f"[fetch-corpus] built {name} ({out.stat().st_size / 1e3:.0f} kB)", file=sys.stderr)


if __name__ == "__main__":
    corpus_dir, work_dir, *names = sys.argv[1:]
    for n in names:
        build(n, Path(corpus_dir), Path(work_dir))
