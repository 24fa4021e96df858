"""Content-addressed files on local disk: originals by SHA-256, extracted text by document.

Writes go to a temporary file under `tmp/` and are renamed into place, so a reader
never sees half a file. Each commit fsyncs the file before the rename and the
directory after it: without the first a crash can leave the new name pointing at
an empty or partial file, without the second the rename itself may be lost. A
crash leaves only temp files behind, and `sweep_temp` removes those once nothing
has written to them for longer than any upload or parse may take.

Whether an original may be removed is the database's business (other documents
may share it): `service.documents` decides under a per-sha256 lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        for sub in (self.tmp, self.root / "sha256", self.root / "text"):
            sub.mkdir(parents=True, exist_ok=True)

    def original(self, sha256: str) -> Path:
        return self.root / "sha256" / sha256[:2] / sha256[2:4] / sha256

    def archive(self, sha256: str) -> Path:
        """A batch's archive, by its bytes: apart from originals, which documents share."""
        return self.root / "archives" / sha256[:2] / sha256

    def text_key(self, document_id: uuid.UUID) -> str:
        return f"text/{document_id}.txt"

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return resolved

    def temp_file(self, prefix: str = "up-") -> tuple[int, Path]:
        self.ensure()
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix=prefix)
        return fd, Path(name)

    def commit(self, tmp: Path, dest: Path) -> Path:
        """Move a finished temp file into place, durably."""
        fsync_file(tmp)
        missing = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        # The new name lives in dest's directory; new directories in their parents.
        for directory in [dest.parent, *(p.parent for p in missing)]:
            _fsync_dir(directory)
        return dest

    def commit_original(self, tmp: Path, sha256: str) -> Path:
        return self.commit(tmp, self.original(sha256))

    def retire(self, path: Path) -> Path | None:
        """Move a blob out of its place into `tmp/` (None: there was none). The
        caller deletes it once its transaction has committed, or `restore`s it;
        after a crash in between, `sweep_temp` deletes it."""
        self.ensure()
        aside = self.tmp / f"retired-{uuid.uuid4().hex}"
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return None
        os.utime(aside)  # its age in tmp/ counts from now, not from its upload
        return aside

    def restore(self, aside: Path, dest: Path) -> None:
        # Content-addressed: if an upload put the same bytes back meanwhile, keep theirs.
        if dest.exists():
            aside.unlink(missing_ok=True)
        else:
            self.commit(aside, dest)

    def delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def sweep_temp(self, max_age_s: float, now: float | None = None) -> int:
        """Remove temp files nothing has written to for `max_age_s` (abandoned by a
        crashed or cut-off upload or parse). Returns how many went."""
        cutoff = (time.time() if now is None else now) - max_age_s
        removed = 0
        try:
            entries = list(os.scandir(self.tmp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # its owner finished (renamed or removed it) meanwhile
        if removed:
            log.warning("removed %d abandoned temp file(s) from %s", removed, self.tmp)
        return removed


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
