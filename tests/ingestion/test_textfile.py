"""The text file with its page map, and page range specs."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.documents import formats
from ingestion.documents.parse import open_document
from ingestion.documents.textfile import (
    PAGE_SEPARATOR,
    PageSpan,
    parse_page_range,
    read_pages,
    spans_from_json,
    spans_to_json,
    write_pages,
)
from ingestion.types import PageText

CorpusFile = Callable[[str], Path]


class CountingReader(io.BytesIO):
    """Counts the bytes handed out, to prove reads are targeted."""

    bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def _write(pages: list[PageText]) -> tuple[bytes, list[PageSpan]]:
    out = io.BytesIO()
    spans = write_pages(pages, out)
    return out.getvalue(), spans


def test_round_trip_on_a_real_document(corpus_file: CorpusFile, tmp_path: Path) -> None:
    with open_document(corpus_file("pdf/r-lang.pdf"), formats.PDF, max_pages=1000) as d:
        pages = list(d.pages())
    seen: list[int] = []
    target = tmp_path / "text.txt"
    with target.open("wb") as out:
        spans = write_pages(pages, out, on_page=lambda p: seen.append(p.number))
    assert seen == list(range(1, 70))
    whole = target.read_text(encoding="utf-8")
    assert whole == PAGE_SEPARATOR.join(p.text for p in pages)
    for page, span in zip(pages, spans, strict=True):
        assert whole[span.char_start : span.char_end] == page.text
        assert span.number == page.number and span.warnings == page.warnings

    stored = spans_from_json(json.loads(json.dumps(spans_to_json(spans))))
    assert stored == spans
    with target.open("rb") as f:
        got = list(read_pages(f, stored, 30, 33))
    assert [text for _, text in got] == [p.text for p in pages[29:33]]
    assert [span.number for span, _ in got] == [30, 31, 32, 33]


def test_read_pages_reads_only_the_requested_bytes() -> None:
    pages = [PageText(n, f"page {n} " + "é" * n) for n in range(1, 201)]
    data, spans = _write(pages)
    reader = CountingReader(data)
    got = list(read_pages(reader, spans, 150, 151))
    assert [t for _, t in got] == [pages[149].text, pages[150].text]
    assert reader.bytes_read == sum(s.byte_end - s.byte_start for s in spans[149:151])


def test_read_pages_rejects_bad_ranges() -> None:
    _, spans = _write([PageText(1, "a"), PageText(2, "b")])
    for first, last in ((0, 1), (1, 3), (2, 1)):
        with pytest.raises(ValueError):
            read_pages(io.BytesIO(), spans, first, last)


def test_lone_surrogates_keep_offsets_valid() -> None:
    data, spans = _write([PageText(1, "a\ud800b"), PageText(2, "c\udfff")])
    assert data.decode("utf-8") == "a\ufffdb\n\nc\ufffd"
    assert (spans[1].char_start, spans[1].char_end) == (5, 7)


def test_warnings_survive_json() -> None:
    _, spans = _write([PageText(1, "", ("no_text_layer", "repaired")), PageText(2, "x")])
    rows = spans_to_json(spans)
    # No separator before the first page with text: an empty page adds nothing.
    assert rows == [[1, 0, 0, 0, 0, ["no_text_layer", "repaired"]], [2, 0, 1, 0, 1]]
    assert spans_from_json(rows) == spans


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        [[1, 2, 3]],
        [[1, 0, 1, 0, "1"]],
        [[1, 0, 1, 0, 1, "w"]],
        [[1, 5, 1, 0, 1]],
        [[True, 0, 0, 0, 0]],
    ],
)
def test_spans_from_json_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        spans_from_json(bad)


page_texts = st.lists(st.text(max_size=300), min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(texts=page_texts, data=st.data())
def test_write_read_round_trip(texts: list[str], data: st.DataObject) -> None:
    pages = [PageText(i, t, ("w",) if i % 3 == 0 else ()) for i, t in enumerate(texts, start=1)]
    raw, spans = _write(pages)
    whole = raw.decode("utf-8")
    assert whole == PAGE_SEPARATOR.join(t for t in texts if t)
    first = data.draw(st.integers(1, len(pages)))
    last = data.draw(st.integers(first, len(pages)))
    got = list(read_pages(io.BytesIO(raw), spans, first, last))
    assert [t for _, t in got] == texts[first - 1 : last]
    for span, text in got:
        assert whole[span.char_start : span.char_end] == text
    assert spans_from_json(json.loads(json.dumps(spans_to_json(spans)))) == spans


def test_page_range_examples() -> None:
    assert parse_page_range("5", 10) == (5, 5)
    assert parse_page_range("3-7", 10) == (3, 7)
    assert parse_page_range(" 3 - ", 10) == (3, 10)
    assert parse_page_range("10-10", 10) == (10, 10)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "use N, N-M or N-"),
        ("abc", "use N, N-M or N-"),
        ("3-x", "use N, N-M or N-"),
        ("1-2-3", "use N, N-M or N-"),
        ("-3", "use N, N-M or N-"),
        ("2.5", "use N, N-M or N-"),
        ("\u0663", "use N, N-M or N-"),  # Arabic-Indic digit three
        ("0", "numbered from 1"),
        ("0-4", "numbered from 1"),
        ("2-0", "numbered from 1"),
        ("7-3", "7 comes after 3"),
        ("11", "has 10 pages"),
        ("4-11", "has 10 pages"),
        ("11-", "has 10 pages"),
    ],
)
def test_page_range_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_page_range(spec, 10)


@pytest.mark.parametrize(
    "spec", ["1-" + " " * 40_000 + "x", "1" + " " * 40_000 + "x", " " * 40_000 + "x"]
)
@pytest.mark.timeout(60)
def test_page_range_of_long_whitespace_is_refused(spec: str) -> None:
    # Before: two whitespace runs around an empty match, 28 s for the first one at
    # 20,000 spaces, four times that at 40,000.
    with pytest.raises(ValueError, match="use N, N-M or N-"):
        parse_page_range(spec, 10)
    assert parse_page_range(" " * 20_000 + "3 -" + " " * 20_000 + "5" + " " * 20_000, 10) == (3, 5)


@given(count=st.integers(1, 5000), data=st.data())
def test_page_range_property(count: int, data: st.DataObject) -> None:
    first = data.draw(st.integers(1, count))
    last = data.draw(st.integers(first, count))
    assert parse_page_range(f"{first}-{last}", count) == (first, last)
    assert parse_page_range(str(first), count) == (first, first)
    assert parse_page_range(f"{first}-", count) == (first, count)
    with pytest.raises(ValueError):
        parse_page_range(str(count + data.draw(st.integers(1, 100))), count)


@given(spec=st.text(max_size=12), count=st.integers(0, 50))
def test_page_range_never_returns_out_of_range(spec: str, count: int) -> None:
    try:
        first, last = parse_page_range(spec, count)
    except ValueError:
        return
    assert 1 <= first <= last <= count
