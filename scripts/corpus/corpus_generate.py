"""The corpus files made here rather than copied: multi-million-character texts, and
documents converted from real ones (those run in the corpus venv, see corpus_derive.py).

Each output names the archive members it is made from, so a run fetches only the
packages whose outputs are missing.
"""

from __future__ import annotations

import gzip
import html.parser
import os
import platform
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Generated:
    name: str  # path in the corpus
    needs: tuple[tuple[str, str], ...]  # (source, member or folder) from the archives
    inputs: tuple[str, ...] = field(default=())  # corpus files it is converted from
    venv: bool = False  # needs pymupdf or pandoc (corpus_derive.py in the corpus venv)


PY_HTML = "usr/share/doc/python3.11/html"
LINUX_HTML = "usr/share/doc/linux-doc-6.1/html"
LIVE_ODT = "usr/share/doc/live-manual/odt"

GENERATED = (
    Generated("huge/python-3.11-docs.concat.txt", (("deb:python3.11-doc", PY_HTML),)),
    Generated("huge/linux-doc-6.1.concat.txt", (("deb:linux-doc-6.1", LINUX_HTML),)),
    Generated(
        "huge/kjv-bible.txt",
        (
            ("deb:bible-kjv", "usr/bin/bible"),
            ("deb:bible-kjv-text", "usr/lib/bible.data"),
            ("deb:bible-kjv-text", "usr/lib/bible.data.conc"),
        ),
    ),
    *(
        Generated(
            f"derived/live-manual.{lang}.docx",
            (("deb:live-manual-odf", f"{LIVE_ODT}/live-manual.{lang}.odt"),),
            venv=True,
        )
        for lang in ("en", "ja", "de")
    ),
    Generated("derived/debian-policy.docx", (), ("epub/debian-policy.epub",), venv=True),
    Generated(
        "derived/debian-developers-reference.docx",
        (),
        ("epub/debian-developers-reference.epub",),
        venv=True,
    ),
    Generated("derived/r-intro.aes256-userpw.pdf", (), ("pdf/r-intro.pdf",), venv=True),
)


# --- HTML trees to one text ------------------------------------------------------------

_BLOCKS = frozenset(
    [
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "tr",
        "table",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "dt",
        "dd",
        "dl",
        "section",
        "article",
        "blockquote",
        "header",
        "footer",
        "nav",
    ]
)
_HIDDEN = frozenset({"script", "style", "template"})


class _Text(html.parser.HTMLParser):
    """Visible text with a line break at every block edge; enough to make real prose
    out of Sphinx pages, not a faithful rendering."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_text(raw: bytes) -> str:
    p = _Text()
    p.feed(raw.decode("utf-8", "replace"))
    p.close()
    text = re.sub(r"[ \t\r\f\v]+\n", "\n", "".join(p.parts))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# Sphinx's generated index and search pages are lists of names, not text.
_SKIP = re.compile(r"(^|/)(genindex[^/]*|search|py-modindex|objects)\.html(\.gz)?$")


def concat_html(root: Path, out: Path) -> int:
    """All pages under root, in path order, each after a line naming it."""
    pages = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.name.endswith((".html", ".htm", ".html.gz"))
    )
    pages = [p for p in pages if not _SKIP.search(p)]
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rel in pages:
            raw = (root / rel).read_bytes()
            if rel.endswith(".gz"):
                raw = gzip.decompress(raw)
            f.write(f"\n\n--- {rel} ---\n\n{html_text(raw)}\n")
    tmp.replace(out)
    return len(pages)


def kjv_bible(work: Path, out: Path) -> None:
    """The whole Bible as its own program prints it: bible.data is a compressed format
    only that program reads."""
    exe = work / "deb-bible-kjv" / "usr/bin/bible"
    exe.chmod(0o755)
    data = work / "deb-bible-kjv-text" / "usr/lib"
    text = subprocess.run(
        [str(exe), "-p", str(data), "gen1:1-rev22:21"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
    ).stdout
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(text)
    tmp.replace(out)


def build_stdlib(g: Generated, work: Path, corpus: Path) -> str:
    """Builds one output that needs no venv; returns a line for the log."""
    out = corpus / g.name
    out.parent.mkdir(parents=True, exist_ok=True)
    if g.name == "huge/kjv-bible.txt":
        kjv_bible(work, out)
        return f"built {g.name} with bible-kjv ({platform.machine()})"
    source, folder = g.needs[0]
    n = concat_html(work / source.replace(":", "-") / folder, out)
    return f"built {g.name} from {n} HTML pages ({os.path.getsize(out) / 1e6:.1f} MB)"
