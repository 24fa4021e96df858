"""The language sniffers read client bytes: linear time whatever they hold (RE2, expat),
and the right language where there is one."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ingestion.documents.metadata import epub_language, fb2_language, html_language

CorpusFile = Callable[[str], Path]

# 254 KiB of "<div " with no ">": every unclosed tag sent Python's re to the end of the
# input looking for a lang, 94 s for the language alone.
UNCLOSED = b"<div " * 52_000


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("data", "language"),
    [
        (b"<html><body><p>Hi</p>" + UNCLOSED, None),
        (b'<html lang="de"><body><p>Hallo</p>' + UNCLOSED, "de"),
        (b"<html><body><p>Salut</p>" + UNCLOSED + b'<div lang="fr">x</div>', "fr"),
        # An unclosed tag does not take the lang of a later one that is no wrapper.
        (b"<html><body><div " + b'<p lang="fr">x</p>', None),
    ],
)
def test_html_with_unclosed_tags(tmp_path: Path, data: bytes, language: str | None) -> None:
    assert html_language(_write(tmp_path, "a.html", data)) == language


@pytest.mark.parametrize(
    ("head", "language"),
    [
        (b'<!DOCTYPE html>\n<HTML\n  LANG="pt-BR">', "pt-BR"),
        (b"<html xmlns='http://www.w3.org/1999/xhtml' xml:lang='ar-MA'>", "ar-MA"),
        (b'<html><head><title>t</title></head><body class="book" lang="ja">', "ja"),
        (b'<html><body><div class="chapter" title="x" lang="zh_CN">', "zh_CN"),
        (b'<htmlx lang="en"><body>', None),
        (b"<html><body><p>no language here</p></body></html>", None),
    ],
)
def test_html_languages(tmp_path: Path, head: bytes, language: str | None) -> None:
    assert html_language(_write(tmp_path, "a.html", head + b"<p>text</p>")) == language


def test_html_from_the_corpus(corpus_file: CorpusFile) -> None:
    path = corpus_file("html/debian-handbook.advanced-administration.ar.html")
    assert html_language(path) == "ar-MA"


@pytest.mark.timeout(60)
def test_fb2(tmp_path: Path) -> None:
    book = b'<?xml version="1.0"?><FictionBook><description><title-info><lang> ru </lang>'
    assert fb2_language(_write(tmp_path, "a.fb2", book)) == "ru"
    hostile = b"<FictionBook>" + b"<lang>" + b" " * 100_000 + b"<lang>x" * 20_000
    assert fb2_language(_write(tmp_path, "b.fb2", hostile)) is None


CONTAINER = (
    b'<?xml version="1.0"?><container version="1.0" '
    b'xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
    b'<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
    b"</rootfiles></container>"
)
PACKAGE = (
    b'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
    b'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T</dc:title>'
    b"<dc:language>sv</dc:language></metadata></package>"
)


def _epub(path: Path, container: bytes, package: bytes = PACKAGE) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/epub+zip")
        zf.writestr("META-INF/container.xml", container)
        zf.writestr("OEBPS/content.opf", package)
    return path


@pytest.mark.parametrize(
    "container",
    [CONTAINER, CONTAINER.replace(b"<rootfile ", b"<c:rootfile xmlns:c='urn:x' ")],
)
def test_epub(tmp_path: Path, container: bytes) -> None:
    assert epub_language(_epub(tmp_path / "a.epub", container)) == "sv"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "container",
    [
        # Unclosed <rootfile tags: quadratic for the old pattern; not XML, so no language.
        b"<container><rootfiles>" + b"<rootfile " * 50_000,
        b'<?xml version="1.0" encoding="no-such-codec"?><container/>',
        CONTAINER.replace(b"OEBPS/content.opf", b"missing.opf"),
        b"<container><rootfiles></rootfiles></container>",
    ],
)
def test_epub_without_a_usable_container(tmp_path: Path, container: bytes) -> None:
    assert epub_language(_epub(tmp_path / "a.epub", container)) is None


def test_epub_from_the_corpus(corpus_file: CorpusFile) -> None:
    assert epub_language(corpus_file("epub/live-manual.de.epub")) == "de"
