"""A job's page range (`ingestion.documents.page_range`): the forms it takes, its
canonical spelling, and the reasons it gives for everything else, hostile specs
included (none may cost more than its length)."""

from __future__ import annotations

import time

import pytest

from ingestion.documents.page_range import (
    MAX_PAGE_NUMBER,
    MAX_SPEC_CHARS,
    PageRange,
    PageRangeError,
    parse_pages,
)


@pytest.mark.parametrize(
    ("spec", "first", "last", "canonical"),
    [
        ("7", 7, 7, "7"),
        ("30-45", 30, 45, "30-45"),
        ("1-1", 1, 1, "1"),
        ("  3-4 ", 3, 4, "3-4"),
        ("007-010", 7, 10, "7-10"),
        (str(MAX_PAGE_NUMBER), MAX_PAGE_NUMBER, MAX_PAGE_NUMBER, str(MAX_PAGE_NUMBER)),
    ],
)
def test_ranges_parse_to_their_canonical_form(
    spec: str, first: int, last: int, canonical: str
) -> None:
    got = parse_pages(spec)
    assert (got.first, got.last, str(got)) == (first, last, canonical)
    assert parse_pages(str(got)) == got
    assert got.count == last - first + 1


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("0-3", "numbered from 1"),
        ("0", "numbered from 1"),
        ("3-0", "numbered from 1"),
        ("5-2", "page 5 comes after page 2"),
        ("a", "not a page range"),
        ("", "not a page range"),
        ("   ", "not a page range"),
        ("1-", "give the last page too"),
        ("-3", "not a page range"),
        ("+3", "not a page range"),
        ("3--4", "not a page range"),
        ("1-2-3", "not a page range"),
        ("3 - 4", "not a page range"),
        ("3.5", "not a page range"),
        ("1e3", "not a page range"),
        ("0x10", "not a page range"),
        ("\u0663", "not a page range"),  # ARABIC-INDIC DIGIT THREE: int() would take it
        ("\uff13-\uff15", "not a page range"),  # fullwidth digits
        ("3\x00", "not a page range"),
        ("3\n-4", "not a page range"),
        ("1-3,10-12", "one range only"),
        ("1-5,3-8", "one range only"),  # overlapping: a list all the same
        ("1,", "one range only"),
        (str(MAX_PAGE_NUMBER + 1), "go up to"),
        ("1-" + str(MAX_PAGE_NUMBER + 1), "go up to"),
        ("99999999999999999999", "go up to"),
        ("9" * MAX_SPEC_CHARS, "go up to"),
        ("9" * (MAX_SPEC_CHARS + 1), f"at most {MAX_SPEC_CHARS} characters"),
        ("1-3," * 5000, f"at most {MAX_SPEC_CHARS} characters"),
    ],
)
def test_anything_else_is_refused_with_its_reason(spec: str, why: str) -> None:
    with pytest.raises(PageRangeError, match=why):
        parse_pages(spec)


def test_a_spec_that_is_no_string_is_refused() -> None:
    with pytest.raises(PageRangeError, match="is a string"):
        parse_pages(3)  # type: ignore[arg-type]


def test_hostile_specs_cost_their_length() -> None:
    # Long runs that a backtracking pattern or int() of 10^6 digits would chew on.
    for spec in ("1" * 10**6, "1-" * 10**6, " " * 10**6 + "1-", "9" * 10**6 + "-1"):
        began = time.perf_counter()
        with pytest.raises(PageRangeError):
            parse_pages(spec)
        # Generous: a quadratic scan of a million characters takes minutes, not this.
        assert time.perf_counter() - began < 1.0


def test_a_range_is_checked_against_the_document() -> None:
    PageRange(3, 5).check_within(5)
    with pytest.raises(PageRangeError, match="it has 4 pages"):
        PageRange(3, 5).check_within(4)
    with pytest.raises(PageRangeError, match=r"it has 1 page$"):
        PageRange(2, 2).check_within(1)


def test_membership_is_by_page_number() -> None:
    r = PageRange(30, 45)
    assert 30 in r and 45 in r and 31 in r
    assert 29 not in r and 46 not in r and "30" not in r
    assert True not in PageRange(1, 1)  # a bool is no page number


def test_a_range_cannot_be_made_backwards_or_from_zero() -> None:
    for first, last in ((0, 1), (5, 2), (1, MAX_PAGE_NUMBER + 1)):
        with pytest.raises(PageRangeError):
            PageRange(first, last)
