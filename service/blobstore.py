"""Content-addressed files on local disk: originals by SHA-256, extracted text by document.

Writes go to a temporary file in the same directory tree and are renamed into
place, so a reader never sees half a file and a crash leaves only temp files.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from pathlib import Path


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        for sub in (self.tmp, self.root / "sha256", self.root / "text"):
            sub.mkdir(parents=True, exist_ok=True)

    def original(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def text_key(self, document_id: uuid.UUID) -> str:
        return f"text/{document_id}.txt"

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return resolved

    def temp_file(self) -> tuple[int, Path]:
        self.ensure()
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="up-")
        return fd, Path(name)

    def commit_original(self, tmp: Path, sha256: str) -> Path:
        dest = self.original(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        return dest

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
