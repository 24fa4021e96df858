"""The package as the Docker image installs it (`pip install ./src`, not editable): a
wheel built from the tracked files holds every file the code reads at run time that
is not Python (the model registry, the status page's templates, the migrations), and
the registry and the templates load from an install of it alone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]
PACKAGES = ("ingestion/", "service/", "workers/", "migrations/")


def _files() -> list[str]:
    """What a checkout holds (tracked, or new and not ignored), as the image's COPY sees it."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return [p for p in listed if (ROOT / p).is_file()]


def test_the_wheel_holds_every_data_file(tmp_path: Path) -> None:
    files = _files()
    data = {p for p in files if p.startswith(PACKAGES) and not p.endswith(".py")}
    assert "ingestion/capacity/models.toml" in data and "service/api/templates/status.html" in data
    # Built from a copy: a build in the checkout would leave build/ there, and reuse it.
    src = tmp_path / "src"
    for rel in files:
        if rel.startswith(PACKAGES) or rel in ("pyproject.toml", "README.md"):
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, src / rel)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("longdoc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert sorted(data - names) == []

    # Installed on its own (no checkout on the path), the registry and a template load.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "from ingestion.capacity.registry import known_models; assert known_models();"
        "from service.api.status_page import render_login;"
        "assert 'key' in render_login(message=None)"
    )
    subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
