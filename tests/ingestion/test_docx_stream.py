"""Hostile DOCX: linear time, memory that does not grow with the XML, the page
limit enforced as pages appear, and no DTD or entity ever processed."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ingestion.documents import formats, zipsniff
from ingestion.documents.parse import open_document
from ingestion.types import IngestError, PageText
from tests.ingestion.hostile_docx import (
    big_body,
    empty_paragraphs,
    in_text_box,
    page_breaks,
    paragraph,
    write_docx,
)

BIG = 1_000_000


def _pages(path: Path, max_pages: int = BIG) -> list[PageText]:
    with open_document(path, formats.DOCX, max_pages=max_pages) as d:
        pages = list(d.pages())
        assert len(pages) == d.info.page_count
        return pages


def _error(path: Path, max_pages: int = BIG) -> IngestError:
    with pytest.raises(IngestError) as info:
        open_document(path, formats.DOCX, max_pages=max_pages)
    return info.value


# The python-docx walk took 11 s on 40,000 and 188 s on 160,000: a page of blank
# paragraphs was re-joined at every paragraph. The bound is for a stuck parse only.
@pytest.mark.timeout(120)
@pytest.mark.parametrize("count", [40_000, 160_000])
def test_empty_paragraphs_parse_in_linear_time(tmp_path: Path, count: int) -> None:
    path = write_docx(tmp_path / "blank.docx", empty_paragraphs(count))
    assert [p.text for p in _pages(path)] == ["first", "last"]


def test_page_limit_fails_as_pages_appear(tmp_path: Path) -> None:
    exact = write_docx(tmp_path / "150.docx", page_breaks(150))
    assert [p.text for p in _pages(exact, max_pages=150)] == [f"page {n}" for n in range(1, 151)]
    error = _error(exact, max_pages=149)
    assert error.code == "too_many_pages" and "149" in error.reason
    # Cut off after page 150: a parser that counts pages only at the end never
    # gets there and calls the file corrupt; this one stops at page 101.
    cut = write_docx(tmp_path / "cut.docx", page_breaks(150), tail=b"<w:p><w:r><w:t>no end")
    assert _error(cut, max_pages=150).code == "corrupt"
    error = _error(cut, max_pages=100)
    assert error.code == "too_many_pages" and "100" in error.reason


def test_dtd_and_entities_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("the password is hunter2")
    doctypes = [
        b'<!DOCTYPE w:document [<!ENTITY x "expanded">]>',
        b'<!DOCTYPE w:document [<!ENTITY x SYSTEM "' + secret.as_uri().encode() + b'">]>',
        b'<!DOCTYPE w:document SYSTEM "http://127.0.0.1:9/evil.dtd">',
    ]
    for i, doctype in enumerate(doctypes):
        path = tmp_path / f"dtd{i}.docx"
        write_docx(path, [paragraph("a &x; b")])
        _prefix_document_xml(path, doctype)
        error = _error(path)
        assert error.code == "corrupt", error
        assert "hunter2" not in error.reason and "expanded" not in error.reason


def _prefix_document_xml(path: Path, doctype: bytes) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    head, sep, rest = members["word/document.xml"].partition(b"?>")
    members["word/document.xml"] = head + sep + doctype + rest
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_nesting_deeper_than_the_parser_limit_is_corrupt(tmp_path: Path) -> None:
    # The walker's stack is what grows with depth; a parser target gets no limit from libxml2.
    deep = b"<w:sdt><w:sdtContent>" * 200 + paragraph("deep") + b"</w:sdtContent></w:sdt>" * 200
    error = _error(write_docx(tmp_path / "deep.docx", [deep]))
    assert error.code == "corrupt" and "256" in error.reason
    shallow = b"<w:sdt><w:sdtContent>" * 50 + paragraph("ok") + b"</w:sdtContent></w:sdt>" * 50
    assert [p.text for p in _pages(write_docx(tmp_path / "ok.docx", [shallow]))] == ["ok"]


def test_xml_parts_over_their_guard_are_too_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_docx(tmp_path / "parts.docx", big_body(2000))
    with zipfile.ZipFile(path) as zf:
        parts = sum(i.file_size for i in zf.infolist() if i.filename.endswith((".xml", ".rels")))
    monkeypatch.setattr(zipsniff, "MAX_DOCX_XML", parts - 1)
    error = _error(path)
    assert error.code == "too_large" and str(parts) in error.reason
    monkeypatch.setattr(zipsniff, "MAX_DOCX_XML", parts)
    assert sum(p.text.count("para ") for p in _pages(path)) == 2000


_CHILD = """
import json, sys
from pathlib import Path
from ingestion.documents import formats, zipsniff
from ingestion.documents.parse import open_document
from ingestion.types import IngestError

def hwm():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM:")).split()[1])

base = hwm()
out = {"pages": 0, "paras": 0, "first": "", "last": "", "error": None}
try:
    with open_document(Path(sys.argv[1]), formats.DOCX, max_pages=10**6) as d:
        for page in d.pages():
            out["pages"] += 1
            out["paras"] += page.text.count("para ")
            out["first"] = out["first"] or page.text[:40]
            out["last"] = page.text[-40:]
except IngestError as exc:
    out["error"] = exc.code
out["grow_mib"] = (hwm() - base) / 1024
print(json.dumps(out))
"""

# ~17 MiB of document.xml, above the growth allowed below: a parser that held the XML
# fails, as does the tree walk (~11 bytes per byte of it). Memory does not depend on
# the size here, so a larger file would only take longer.
_COUNT = 128_000


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("boxed", [False, True], ids=["body", "text-box"])
def test_large_document_xml_parses_in_bounded_memory(tmp_path: Path, boxed: bool) -> None:
    body = big_body(_COUNT)
    path = write_docx(tmp_path / "big.docx", in_text_box(body) if boxed else body)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("word/document.xml").file_size > 16 * 2**20
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout)
    assert result["error"] is None
    assert result["paras"] == _COUNT
    assert result["first"].startswith("anchor\npara 0\n" if boxed else "para 0\n")
    assert result["last"].endswith(f"para {_COUNT - 1}")
    # Python, lxml and one page in flight; the XML and the text never sit in memory.
    assert result["grow_mib"] < 12, result
