"""The tier markers follow the fixtures: files wholly of one tier are selected whole.

A fixture renamed without its entry in tests/conftest.py's tier sets would drop its
tests into the fast loop, where they would start servers; this catches that.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _collected(marker: str | None, path: str) -> int:
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    if marker:
        argv += ["-m", marker]
    out = subprocess.run(
        [*argv, path], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout
    return sum(1 for line in out.splitlines() if "::" in line)


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
    total = _collected(None, path)
    assert total > 0
    assert _collected(marker, path) == total
    assert _collected(f"not ({marker})", path) == 0
