"""`ingestion.tasks.repetition.find_loop`: an output that repeats a block of words back to
back is caught, where it is caught it is cut after the first copy, and real prose is
never taken for a loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.tasks.repetition import MIN_LOOP_WORDS, MIN_REPEATS, find_loop
from tests.conftest import corpus_file

# What SmolLM2 135M wrote, 47 times, summarising the LaTeX3 style guide greedily.
LOOPED = "The document contains key facts, figures and conclusions."

# Real prose with its own repetitions (lists, tables, code, headings).
PROSE = [
    "text/debian-policy.txt",
    "text/debian-reference.en.txt",
    "huge/python-3.11-docs.concat.txt",
    "huge/kjv-bible.txt",
]


def test_the_reported_loop_is_found_and_cut_after_its_first_copy() -> None:
    intro = "This guide sets out how LaTeX3 code should be laid out. "
    text = intro + " ".join([LOOPED] * 47) + "\n"
    loop = find_loop(text)
    assert loop is not None
    assert (loop.block_words, loop.repeats) == (len(LOOPED.split()), 47)
    assert text[: loop.keep_chars] == intro + LOOPED
    assert find_loop(text[: loop.keep_chars]) is None


def test_a_loop_is_found_while_a_word_is_still_streaming_in() -> None:
    text = "Intro. " + " ".join([LOOPED] * 4) + " The docu"
    loop = find_loop(text)
    assert loop is not None and loop.block_words == len(LOOPED.split())
    assert text[: loop.keep_chars] == "Intro. " + LOOPED


def test_a_short_block_needs_more_copies() -> None:
    few = "Results: " + "very " * (MIN_LOOP_WORDS - 2)
    assert find_loop(few) is None
    many = "Results: " + "very " * MIN_LOOP_WORDS
    loop = find_loop(many)
    assert loop is not None and loop.block_words == 1 and loop.repeats == MIN_LOOP_WORDS


def test_two_copies_of_a_long_passage_are_not_a_loop() -> None:
    passage = " ".join(f"word{i}" for i in range(40))
    assert find_loop(f"{passage} {passage} ") is None
    assert find_loop(f"{passage} {passage} {passage} ") is not None


@pytest.mark.parametrize("rel", PROSE)
def test_real_prose_is_never_a_loop(rel: str) -> None:
    """Every prefix end a stream could be checked at, over real documents."""
    text = corpus_file(rel).read_text(encoding="utf-8", errors="replace")[:400_000]
    found = []
    for end in range(200, len(text), 97):
        loop = find_loop(text[:end])
        if loop is not None:
            found.append((end, text[max(0, end - 300) : end]))
    assert not found, found[:3]


_WORDS = st.text(alphabet="abcdefgh.,", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.lists(_WORDS, max_size=30),
    block=st.lists(_WORDS, min_size=1, max_size=20),
    copies=st.integers(min_value=MIN_REPEATS, max_value=30),
)
def test_any_block_repeated_enough_is_caught_and_cutting_ends_it(
    prefix: list[str], block: list[str], copies: int
) -> None:
    if len(block) * copies < MIN_LOOP_WORDS:
        copies = -(-MIN_LOOP_WORDS // len(block))
    text = " ".join(prefix + block * copies) + " "
    loop = find_loop(text)
    assert loop is not None
    assert loop.repeats >= MIN_REPEATS and loop.block_words <= len(block)
    kept = text[: loop.keep_chars].split()
    # What is kept is the text's start, and the rest is copies of the last block kept.
    words = text.split()
    assert words[: len(kept)] == kept
    tail = words[len(kept) :]
    last = kept[-loop.block_words :]
    assert tail == (last * (len(tail) // loop.block_words + 1))[: len(tail)]
