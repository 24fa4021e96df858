"""Regular expressions that cannot backtrack, for patterns or text a client controls.

Python's `re` backtracks: "^(a|aa)+$" on forty a's and a "b" takes longer than the
universe has, and a scan like "<div\\b[^>]*?lang" over repeated unclosed tags is
quadratic. RE2 compiles to automata and matches in time linear in the text, with the
compiled pattern held to PATTERN_MEMORY; the price is that it refuses backreferences
and lookaround.
"""

from __future__ import annotations

from typing import Any, AnyStr, Generic

import re2

# google-re2 ships no type hints.
_re2: Any = re2


# Memory for one compiled pattern (RE2's default is 8 MiB). google-re2 keeps the last
# 128 patterns compiled, so this bounds that cache at 128 MiB: a client's 40-way
# alternation of "[^a]{1000}" holds 4 MiB at the default. Patterns people write (dates,
# codes, e-mail shapes, "^.{0,1000}$") take kilobytes.
PATTERN_MEMORY = 1 << 20


def _options(*, ignore_case: bool) -> Any:
    options = _re2.Options()
    # RE2 would print every refused pattern to stderr; the caller reports it instead.
    options.log_errors = False
    options.max_mem = PATTERN_MEMORY
    options.case_sensitive = not ignore_case
    return options


class LinearPattern(Generic[AnyStr]):
    """A pattern compiled by RE2. ValueError, with RE2's reason, if it cannot be."""

    def __init__(self, pattern: AnyStr, *, ignore_case: bool = False) -> None:
        try:
            self._regexp = _re2.compile(pattern, _options(ignore_case=ignore_case))
        except _re2.error as exc:
            reason = exc.args[0] if exc.args else "cannot be compiled"
            if isinstance(reason, bytes):
                reason = reason.decode("utf-8", "replace")
            raise ValueError(str(reason)) from None
        self.pattern: AnyStr = pattern

    def matches(self, text: AnyStr) -> bool:
        """Whether the pattern occurs anywhere in `text` (`re.search`, as JSON Schema
        has it: patterns are not anchored)."""
        return self._regexp.search(text) is not None

    def group(self, text: AnyStr, index: int = 1) -> AnyStr | None:
        """Group `index` of the first match in `text`, or None."""
        match = self._regexp.search(text)
        if match is None:
            return None
        value: AnyStr | None = match.group(index)
        return value
