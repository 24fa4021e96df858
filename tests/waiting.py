"""Waiting in tests: poll for a condition, with a bound, never sleep a guessed time.

A fixed sleep is either too short on a loaded machine (the test fails for no reason)
or too long everywhere else; waiting for the condition itself is neither. The bound
turns a condition that never comes into a failure that says what was awaited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 120.0,
    interval: float = 0.1,
    what: str | None = None,
) -> T:
    """The first truthy value `predicate` returns, polled every `interval` seconds;
    AssertionError naming `what` after `timeout` seconds without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or 'the condition'}")
        time.sleep(interval)
