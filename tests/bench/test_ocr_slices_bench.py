"""bench/ocr_slices.py: its helpers (the slice schedule's ideal speed-up, phase times
from polls, the page comparison that fails a run, /proc readings), and one tiny run
on a real stack (3 pages in 2 slices, 2 worker processes) that measures what it
says and checks the text. Rates are printed by the bench, never asserted here."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pymupdf
import pytest

from bench import ocr_slices
from bench.ocr_slices_support import (
    Sample,
    build_scan,
    busy_s,
    cpu_s,
    ideal_speedup,
    mismatches,
    page_range,
    phases,
    spread,
    status_kib,
)
from tests.conftest import CORPUS, REDIS_URL

pytestmark = pytest.mark.timeout(600)
_open: Any = pymupdf.open  # untyped


def test_the_ideal_speedup_follows_the_slices_handed_out_in_order() -> None:
    assert ideal_speedup(24, 4, 2) == 2.0  # 6 slices, 3 each
    assert ideal_speedup(20, 4, 2) == pytest.approx(20 / 12)  # 5 slices: one holds 3
    assert ideal_speedup(6, 4, 2) == 1.5  # 4 + 2 pages
    assert ideal_speedup(24, 4, 1) == 1.0
    assert ideal_speedup(3, 4, 2) == 1.0  # one slice: nothing to share
    assert ideal_speedup(8, 4, 16) == 2.0  # more processes than slices
    with pytest.raises(ValueError):
        ideal_speedup(0, 4, 2)


def test_phases_come_from_the_first_poll_that_saw_each() -> None:
    polls = [
        Sample(0.2, "parsing", None, None),
        Sample(0.4, "parsing", 8, 0),
        Sample(5.0, "parsing", 8, 7),
        Sample(6.0, "parsing", 8, 8),
        Sample(6.2, "parsing", 8, 8),
        Sample(6.6, "parsed", 8, 8),
    ]
    got = phases(polls)
    assert got["plan"] == 0.4 and got["total"] == 6.6
    assert got["slices"] == pytest.approx(5.6) and got["join"] == pytest.approx(0.6)
    inline = phases([Sample(0.2, "parsing", None, None), Sample(9.0, "parsed", None, None)])
    assert inline == {"plan": None, "slices": None, "join": None, "total": 9.0}


def test_a_page_that_differs_from_the_inline_read_is_named() -> None:
    inline = [(1, "one", ["ocr: eng 150dpi"]), (2, "two", ["ocr: eng 150dpi"])]
    same = [{"number": n, "text": t, "warnings": w} for n, t, w in inline]
    assert mismatches(inline, same) == []
    other = [dict(p) for p in same]
    other[1]["text"] = "tw0"
    assert mismatches(inline, other) == ["page 2: text differs (3 vs 3 chars)"]
    other[1] = {**same[1], "warnings": ["ocr_failed: x"]}
    want = "page 2: warnings ['ocr_failed: x'] vs ['ocr: eng 150dpi']"
    assert mismatches(inline, other) == [want]
    assert mismatches(inline, same[:1]) == ["page 2: missing in the stored text"]
    assert mismatches(inline[:1], same) == ["page 2: extra in the stored text"]


def test_proc_readings_move_with_work() -> None:
    pid = os.getpid()
    assert status_kib(pid, "VmHWM") >= status_kib(pid, "VmRSS") > 1024
    c0, b0 = cpu_s(pid), busy_s()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert cpu_s(pid) - c0 >= 0.25
    assert busy_s() - b0 >= 0.25  # the machine was busy at least while we were


def test_too_few_pages_to_slice_is_refused() -> None:
    with pytest.raises(SystemExit):
        ocr_slices.parse_args(["--pages", str(ocr_slices.INLINE_MAX)])


@pytest.mark.usefixtures("tesseract")
def test_a_tiny_run_measures_every_path_and_checks_the_text(tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    res = ocr_slices.main(
        ["--corpus", str(CORPUS), "--pages", "3", "--slice-pages", "2", "--concurrency", "2",
         "--quiet-wait", "0", "--redis-url", REDIS_URL, "--json", str(out)]
    )  # fmt: skip
    assert out.is_file() and len(res["scan"]["pages"]) == 3
    b, (before, after) = res["baseline"], res["baselines"].values()
    assert b["seconds"] == min(before["seconds"], after["seconds"])
    assert b["pages"] == [1, 2, 3] and b["cer"] < ocr_slices.MAX_CER and b["cpu_s"] > 0
    inline, sliced = res["runs"]
    assert (inline["label"], inline["procs"]) == ("inline", 1)
    assert inline["phases"]["slices"] is None
    assert (sliced["label"], sliced["procs"]) == ("slices", 2)
    assert sliced["phases"]["plan"] is not None and sliced["phases"]["join"] is not None
    for r in res["runs"]:
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_mib"] >= r["base_mib"] > 0
        assert r["ratio"] == pytest.approx(b["seconds"] / r["wall_s"])
        assert r["cpu_ratio"] == pytest.approx(r["cpu_s"] / b["cpu_s"])


def test_the_scan_takes_its_pages_spread_over_the_range_asked() -> None:
    assert page_range("7-107") == (7, 107) and page_range("3") == (3, 3)
    for bad in ("0-4", "9-2", "x"):
        with pytest.raises(ValueError):
            page_range(bad)
    assert spread(list(range(10)), 3) == [1, 5, 8]
    assert spread([4, 5], 3) == [4, 5]


def test_the_scan_is_image_only_pages_of_the_range(tmp_path: Path) -> None:
    out = tmp_path / "s.pdf"
    scan = build_scan(CORPUS, "pdf/r-intro.pdf", (7, 107), 2, 72, out)
    assert scan["pages"] == [33, 83] and all(len(t) >= 800 for t in scan["truth"])
    with _open(out) as doc:
        assert doc.page_count == 2 and not doc[0].get_text().strip() and doc[0].get_images()
    with pytest.raises(SystemExit, match="pages with enough text"):
        build_scan(CORPUS, "pdf/r-intro.pdf", (1, 6), 6, 72, tmp_path / "t.pdf")
