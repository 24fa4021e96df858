"""The tier markers follow the fixtures: files wholly of one tier are selected whole.

A fixture renamed without its entry in tests/conftest.py's tier sets would drop its
tests into the fast loop, where they would start servers; this catches that.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _collected(marker: str, path: str) -> tuple[int, int]:
    """(selected, deselected) by `pytest -m MARKER PATH`: one collection, since pytest
    counts the deselected in its summary line."""
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    # These plugins bring no fixture of a tier and no test item; loading them is two
    # thirds of a collection's time.
    argv += ["-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio"]
    out = subprocess.run(
        [*argv, "-m", marker, path], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout
    selected = sum(1 for line in out.splitlines() if "::" in line)
    deselected = re.search(r"(\d+) deselected", out)
    return selected, int(deselected.group(1)) if deselected else 0


@pytest.mark.parametrize(
    ("marker", "path"),
    [
        ("vllm", "tests/vllm/test_kv_geometry.py::test_pool_equals_prediction"),
        ("services", "tests/api/test_documents.py"),
        # Pure tests beside vLLM ones stay in the fast loop.
        ("not vllm and not services", "tests/vllm/test_vllm_server.py::test_parse_kv_capacity_log"),
    ],
)
def test_a_file_of_one_tier_is_selected_whole(marker: str, path: str) -> None:
    # `not (MARKER)` selects the rest of the same collection, so it would select none.
    selected, deselected = _collected(marker, path)
    assert selected > 0
    assert deselected == 0, f"{deselected} of {path} fall outside -m {marker!r}"
