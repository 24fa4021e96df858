"""One gate for what a test needs but the repository does not hold: the corpus, the
tokenizer files, the vLLM venv and its models. On a workstation a missing piece
skips the test and says how to build it; under CI=true it fails the run, so a CI
that lacks them cannot pass by skipping what it was meant to check."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require(condition: object, reason: str) -> None:
    """Go on when `condition` holds; otherwise skip with `reason`, or fail under CI."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite fails the run)", pytrace=False)
    pytest.skip(reason)
