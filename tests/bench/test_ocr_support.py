"""bench/ocr_support.py: the bit-parallel edit distance equals the textbook one, and
the CER ignores only what it says it ignores (line breaks, ligatures)."""

from __future__ import annotations

import random

from bench.ocr_support import cer, levenshtein


def _table(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def test_edit_distance_equals_the_table() -> None:
    rng = random.Random(13)
    for _ in range(2_000):
        a = "".join(rng.choice("abcé ") for _ in range(rng.randint(0, 40)))
        b = "".join(rng.choice("abdé") for _ in range(rng.randint(0, 70)))
        assert levenshtein(a, b) == _table(a, b), (a, b)
    long = "".join(rng.choice("abcdefgh ") for _ in range(3_000))
    assert levenshtein(long, long[:1000] + "xyz" + long[1200:]) == 200


def test_cer_counts_characters_not_layout() -> None:
    assert cer("ﬁrst line\nsecond  line", "first line second line") == 0.0
    assert cer("abcd", "abXd") == 0.25
    assert cer("abcd", "") == 1.0
    assert cer("", "") == 0.0
