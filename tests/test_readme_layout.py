"""The README's Layout section matches the tree: every path it names exists, and every
module and package of the three source packages is named there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_PACKAGES = ("ingestion", "service", "workers")


def _named() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 1)[1].split("```", 1)[0]
    named: set[str] = set()
    parent = ""
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        names = re.split(r" {2,}", line.strip(), maxsplit=1)[0].split()
        if indent == 0:
            parent = names[0] if len(names) == 1 else ""
            named.update(n.rstrip("/") for n in names)
        elif indent == 2 and parent:
            named.update(f"{parent}{n}".rstrip("/") for n in names)
        # deeper: a description carried on to the next line
    return named


def _tree() -> set[str]:
    out = set()
    for pkg in _PACKAGES:
        for child in (REPO / pkg).iterdir():
            package = child.is_dir() and (child / "__init__.py").is_file()
            module = child.suffix == ".py" and child.name != "__init__.py"
            if package or module:
                out.add(f"{pkg}/{child.name}")
    return out


def test_every_path_the_layout_names_exists() -> None:
    named = _named()
    assert "service/jobs" in named and "ingestion" in named  # the parse found the block
    missing = sorted(p for p in named if not (REPO / p).exists())
    assert not missing, f"README's Layout names paths that do not exist: {missing}"


def test_every_module_is_in_the_layout() -> None:
    unnamed = sorted(_tree() - _named())
    assert not unnamed, f"modules the README's Layout does not name: {unnamed}"
