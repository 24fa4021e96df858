"""Spotting an output that has started to loop.

Greedy decoding on a small model can settle into one sentence said again and again
until the output budget runs out (SmolLM2 135M summarising the LaTeX3 style guide: one
sentence, 47 times). What gives it away is a block of words repeated back to back at
the end of the output. Words, not tokens or characters: the check must not depend on
the tokenizer, and whitespace between the copies varies.

Checked while the output streams in, so it looks at a bounded tail and stays cheap on
ordinary text: for most block lengths the first comparison already fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"\S+")

# A loop is at least this many copies covering at least this many words: a sentence of
# 8+ words said three times, or a short phrase a dozen times. Prose, lists and tables
# repeat words, but not a whole run of them three times back to back.
MIN_REPEATS = 3
MIN_LOOP_WORDS = 24
MAX_BLOCK_WORDS = 80
TAIL_CHARS = 8_000


@dataclass(frozen=True, slots=True)
class Loop:
    """`keep_chars`: the output up to and including the first copy of the block."""

    keep_chars: int
    block_words: int
    repeats: int


def find_loop(
    text: str,
    *,
    min_repeats: int = MIN_REPEATS,
    min_loop_words: int = MIN_LOOP_WORDS,
    max_block_words: int = MAX_BLOCK_WORDS,
    tail_chars: int = TAIL_CHARS,
) -> Loop | None:
    """The loop `text` ends in, or None. The shortest repeating block wins."""
    start = max(len(text) - tail_chars, 0)
    # str.split() splits where \s+ does (both use str.isspace) and is several times
    # faster than the regex; a word's end offset is looked up only for a loop found.
    words = text[start:].split()
    if start > 0 and words:
        words.pop(0)  # may be the end of a word cut by the tail
    if words and not text[-1].isspace():
        words.pop()  # still streaming in: comparing half a word would miss the loop
    n = len(words)
    for block in range(1, min(max_block_words, n // min_repeats) + 1):
        same = 0  # words at the end equal to the word one block earlier
        while same < n - block and words[n - 1 - same] == words[n - 1 - same - block]:
            same += 1
        repeats = 1 + same // block
        if repeats >= min_repeats and same + block >= min_loop_words:
            return Loop(_word_end(text, start, n - 1 - same), block, repeats)
    return None


def _word_end(text: str, start: int, index: int) -> int:
    """Where word `index` of `find_loop`'s list ends in `text` (the first word of a
    tail that starts inside the text was dropped there)."""
    skip = 1 if start > 0 else 0
    for k, match in enumerate(_WORD.finditer(text, start)):
        if k == index + skip:
            return match.end()
    raise AssertionError("word index past the text")  # words came from the same text
