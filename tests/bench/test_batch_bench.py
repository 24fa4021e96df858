"""The batch benchmark at tiny sizes: its archives hold real, distinct documents under
distinct names, and one run of its ingest (embedded stack) and memory parts measures
every document it sent. Rates are printed by the bench, never asserted here."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from bench import batch, batch_corpus
from tests.conftest import CORPUS, corpus_file

pytestmark = pytest.mark.timeout(900)


def test_the_python_docs_split_into_one_named_document_per_page(tmp_path: Path) -> None:
    whole = corpus_file(batch_corpus.PY_DOCS).read_text(encoding="utf-8", errors="replace")
    pages = batch_corpus.python_pages(CORPUS, tmp_path)
    names = {e.name for e in pages}
    assert len(names) == len(pages) > 400
    assert "python-3.11-docs/library/os.txt" in names
    os_page = next(e for e in pages if e.name.endswith("/library/os.txt"))
    text = os_page.path.read_text(encoding="utf-8")
    assert "--- " not in text.splitlines()[0] and text.strip() in whole

    files = batch_corpus.corpus_files(CORPUS)
    chosen = batch_corpus.select(files, pages, 200)
    assert len(chosen) == 200 and {e.name.split("/")[0] for e in chosen} > {"python-3.11-docs"}
    assert len({batch_corpus.sha256(e.path) for e in chosen}) == 200
    batch_corpus.write_tar(chosen[:5], tmp_path / "a.tar")
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert tar.getnames() == [e.name for e in chosen[:5]]


def test_the_filler_archive_reaches_its_size_under_distinct_names(tmp_path: Path) -> None:
    dest = tmp_path / "fill.tar"
    count = batch_corpus.filler_tar(CORPUS, dest, 3 << 20)
    assert dest.stat().st_size >= 3 << 20
    with tarfile.open(dest) as tar:
        names = tar.getnames()
    assert len(names) == len(set(names)) == count


def test_one_tiny_run_measures_every_document_it_sent(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--docs", "3", "--stacks", "embedded", "--skip-inference"]
    res = batch.main([*argv, "--small-mib", "1", "--large-mib", "2"])
    ingest = res["ingest"]
    assert ingest["single"]["docs"] == ingest["batch"]["embedded"]["docs"] == 3
    assert ingest["single"]["pages"] == ingest["batch"]["embedded"]["pages"] > 0
    small, large = res["memory"].values()
    assert large["bytes"] > small["bytes"] and small["entries"] > 0
    assert small["peak_mib"] >= small["idle_mib"] > 0
    assert "API peak RSS" in capsys.readouterr().out
