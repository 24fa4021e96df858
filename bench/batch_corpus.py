"""The archives bench/batch.py sends, built on disk from the shared corpus (never whole
in memory): real documents only.

The corpus has fewer than 200 files, but `huge/python-3.11-docs.concat.txt` is the
Python docs' pages joined with `--- NAME.html ---` lines: split there, each page is a
text document of its own, named by its page.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ingestion.documents.formats import detect_media_type_path
from ingestion.types import IngestError

KINDS = ("pdf", "docx", "epub", "html", "text")  # the corpus's ordinary documents
PY_DOCS = "huge/python-3.11-docs.concat.txt"
PY_DIR = "python-3.11-docs"
_MARKER = re.compile(r"^--- (\S+)\.html ---$")


@dataclass(frozen=True)
class Entry:
    name: str  # its path in the archive (the batch's custom_id)
    path: Path  # the file on disk
    size: int


def corpus_files(corpus: Path) -> list[Entry]:
    out = []
    for kind in KINDS:
        for path in sorted((corpus / kind).iterdir()):
            if path.is_file():
                out.append(Entry(f"{kind}/{path.name}", path, path.stat().st_size))
    return out


def python_pages(corpus: Path, out_dir: Path) -> list[Entry]:
    """One `.txt` per page under `out_dir`, streamed line by line; blank pages dropped."""
    pages: list[tuple[str, Path, bool]] = []  # name, file, has text
    out: TextIO | None = None
    with (corpus / PY_DOCS).open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if m := _MARKER.match(line.rstrip("\n")):
                if out is not None:
                    out.close()
                name = f"{PY_DIR}/{m.group(1)}.txt"
                path = out_dir / name
                path.parent.mkdir(parents=True, exist_ok=True)
                pages.append((name, path, False))
                out = path.open("w", encoding="utf-8")
            elif out is not None:
                out.write(line)
                if not pages[-1][2] and line.strip():
                    pages[-1] = (*pages[-1][:2], True)
    if out is not None:
        out.close()
    for _, path, text in pages:
        if not text:
            path.unlink()
    return [Entry(name, path, path.stat().st_size) for name, path, text in pages if text]


def select(files: list[Entry], pages: list[Entry], n: int) -> list[Entry]:
    """`n` documents (0: all), corpus files and Python pages in the corpus's proportion,
    the smallest files first. Left out: a file Longdoc refuses by type (the corpus has
    a Strict OOXML DOCX; an entry that makes no document would have no rate to compare)
    and content repeated (it would be one document)."""
    files = [e for e in files if _supported(e)]
    if 0 < n < len(files) + len(pages):
        k = max(1, round(n * len(files) / (len(files) + len(pages))))
        chosen = sorted(files, key=lambda e: e.size)[:k] + pages[: n - k]
    else:
        chosen = files + pages
    seen: set[str] = set()
    out = []
    for e in chosen:
        digest = sha256(e.path)
        if digest not in seen:
            seen.add(digest)
            out.append(e)
    return out


def _supported(e: Entry) -> bool:
    try:
        detect_media_type_path(e.path, e.name)
    except IngestError:
        return False
    return True


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_tar(entries: list[Entry], dest: Path) -> None:
    """A plain tar of `entries` (tarfile copies each file in blocks)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            tar.add(e.path, arcname=e.name, recursive=False)


def filler_tar(corpus: Path, dest: Path, target_bytes: int) -> int:
    """A tar of at least `target_bytes`: the corpus files again and again, each round
    under its own directory so every name is distinct. Returns its entry count."""
    files = corpus_files(corpus)
    count = 0
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        while tar.offset < target_bytes:
            e = files[count % len(files)]
            tar.add(e.path, arcname=f"round-{count // len(files)}/{e.name}", recursive=False)
            count += 1
    return count
