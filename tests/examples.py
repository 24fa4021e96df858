"""How many examples a property test runs, by profile.

`ci` (the default) is what the fast tier runs on every change; `deep`
(LONGDOC_EXAMPLES=deep) is for hunting after a change to the code a property covers.
Hypothesis keeps every failing example in .hypothesis/ and replays it first, so a
bug found once stays found at the smaller count.
"""

from __future__ import annotations

import os

PROFILE = os.environ.get("LONGDOC_EXAMPLES", "ci")
if PROFILE not in ("ci", "deep"):
    raise ValueError(f"LONGDOC_EXAMPLES={PROFILE!r}: expected ci or deep")


def examples(ci: int, deep: int) -> int:
    """`max_examples` for a property test under the current profile."""
    return deep if PROFILE == "deep" else ci
