"""tests/prereq.py: a missing prerequisite skips on a workstation and fails under CI,
checked on a real pytest run in a subprocess; and no test skips around it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.prereq import in_ci, require

REPO = Path(__file__).resolve().parent.parent

_PROBE = """
from tests.prereq import require

def test_present():
    require(True, "never shown")

def test_missing():
    require(False, "widget missing: run make widget")
"""


def _pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(_PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's settings
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(REPO)
    # The installed plugins (schemathesis above all) cost seconds a start and are not needed.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_outside_ci_a_missing_prerequisite_skips_with_its_reason(tmp_path: Path) -> None:
    done = _pytest(tmp_path, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b1 passed, 1 skipped\b", done.stdout), done.stdout
    assert "widget missing: run make widget" in done.stdout


def test_under_ci_a_missing_prerequisite_fails_the_run(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "true")
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"\b1 failed, 1 passed\b", done.stdout), done.stdout
    assert "widget missing: run make widget" in done.stdout
    assert "skipped" not in done.stdout


@pytest.mark.parametrize(
    ("value", "ci"), [("true", True), ("TRUE", True), ("1", True), ("", False), ("false", False)]
)
def test_which_values_of_ci_count(monkeypatch: pytest.MonkeyPatch, value: str, ci: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is ci
    require(True, "present: neither skips nor fails")
    # Both caught, so that a wrong outcome fails this test instead of skipping it.
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception), match="absent") as raised:
        require(False, "absent")
    assert raised.type is (pytest.fail.Exception if ci else pytest.skip.Exception)


def test_no_test_skips_around_the_helper() -> None:
    # A bare skip would pass a CI that lacks what the test checks.
    bare = re.compile(r"pytest\.(skip\(|importorskip\()|mark\.skip(if)?\b")
    found = [
        f"{path.relative_to(REPO)}:{n}"
        for path in sorted((REPO / "tests").rglob("*.py"))
        if path not in (REPO / "tests" / "prereq.py", Path(__file__).resolve())
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line)
    ]
    assert found == []
