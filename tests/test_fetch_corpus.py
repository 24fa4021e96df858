"""scripts/fetch-corpus.sh's pieces, offline: reading .deb members, pinned downloads,
and that every corpus file a test or benchmark names is one the script builds."""

from __future__ import annotations

import hashlib
import io
import lzma
import re
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts" / "corpus"))
import corpus_registry as registry
import fetch_corpus as build
from corpus_generate import GENERATED, html_text


def _deb(path: Path, members: dict[str, bytes | str]) -> Path:
    """A real .deb layout: an ar archive whose data.tar.xz holds the members; a str
    value makes a symbolic link to that target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, body in members.items():
            info = tarfile.TarInfo(f"./{name}")
            if isinstance(body, str):
                info.type, info.linkname = tarfile.SYMTYPE, body
                tf.addfile(info)
            else:
                info.size = len(body)
                tf.addfile(info, io.BytesIO(body))
    parts = [("debian-binary", b"2.0\n"), ("data.tar.xz", lzma.compress(buf.getvalue()))]
    with path.open("wb") as f:
        f.write(b"!<arch>\n")
        for name, data in parts:
            f.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode())
            f.write(data + (b"\n" if len(data) % 2 else b""))
    return path


def test_extract_takes_files_folders_and_follows_links(tmp_path: Path) -> None:
    deb = _deb(
        tmp_path / "p.deb",
        {
            "usr/share/doc/p/manual.pdf": b"%PDF-1.4 real bytes",
            "usr/share/doc/p/html/a.html": b"<p>a</p>",
            "usr/share/doc/p/html/sub/b.html": b"<p>b</p>",
            "usr/share/doc/p/other.txt": b"not wanted",
            "usr/share/doc/p/link.pdf": "manual.pdf",
        },
    )
    into = tmp_path / "out"
    wanted = {"usr/share/doc/p/link.pdf", "usr/share/doc/p/html"}
    registry.extract(deb, "deb", wanted, into)
    assert (into / "usr/share/doc/p/link.pdf").read_bytes() == b"%PDF-1.4 real bytes"
    assert (into / "usr/share/doc/p/html/sub/b.html").read_bytes() == b"<p>b</p>"
    assert not (into / "usr/share/doc/p/other.txt").exists()
    assert not (into / "usr/share/doc/p/link.pdf").is_symlink()


def _archive(body: bytes, sha: str | None = None) -> registry.Archive:
    digest = sha or hashlib.sha256(body).hexdigest()
    return registry.Archive("deb", "p", "1", "pool/p_1_all.deb", len(body), digest)


def test_download_checks_the_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mirror" / "pool").mkdir(parents=True)
    body = b"package bytes"
    (tmp_path / "mirror" / "pool" / "p_1_all.deb").write_bytes(body)
    monkeypatch.setattr(registry, "DEBIAN_BASE", (tmp_path / "mirror").as_uri())
    dl = tmp_path / "dl"
    dl.mkdir()
    assert registry.download(_archive(body), dl).read_bytes() == body
    (dl / "p_1_all.deb").unlink()
    with pytest.raises(registry.FetchError, match="different file"):
        registry.download(_archive(body, "0" * 64), dl)
    assert list(dl.iterdir()) == []  # nothing half-checked is left behind


def test_unreachable_registry_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "DEBIAN_BASE", "http://127.0.0.1:9")  # discard port
    with pytest.raises(registry.FetchError, match=r"cannot reach http://127\.0\.0\.1:9/"):
        registry.download(_archive(b"x"), tmp_path)


def test_html_text_keeps_prose_only() -> None:
    raw = b"<html><script>var x=1;</script><p>One&amp;two</p><div>three</div></html>"
    assert html_text(raw) == "One&two\n\nthree"


def test_every_source_has_a_pinned_archive() -> None:
    archives = build.load_archives()
    sources = {f.source for f in build.load_files()}
    sources |= {s for g in GENERATED for s, _ in g.needs}
    assert sources - archives.keys() == set()


def test_the_script_builds_every_corpus_file_the_tests_and_benchmarks_name() -> None:
    built = {f.name for f in build.load_files()} | {g.name for g in GENERATED}
    folders = "pdf|pdf-scanned|pdf-encrypted|pdf-problem|epub|html|docx|odt|text|huge|derived"
    named = re.compile(rf"""["']((?:{folders})/[\w.+-]+\.\w+)["']""")
    used = set()
    for path in [*(REPO / "tests").rglob("*.py"), *(REPO / "bench").rglob("*.py")]:
        used |= set(named.findall(path.read_text(encoding="utf-8")))
    used -= {"text/plain", "text/html", "text/event-stream"}  # media types, not files
    assert used, "the pattern found no corpus paths at all"
    assert used - built == set()
