"""The archive reader on archives of real documents and on hostile ones.

Archives are built here, in memory or under tmp_path; the bombs with the streaming
builders of tests/hostile_archives.py, so a 10 GiB entry is a 10 MB file.
"""

from __future__ import annotations

import gzip
import io
import random
import stat
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ingestion.archives import (
    ArchiveEntry,
    ArchiveError,
    ArchiveLimitError,
    ArchiveLimits,
    EntryError,
    open_archive,
)
from ingestion.documents import formats
from tests.hostile_archives import (
    GiB,
    damage_entry,
    duplicate_record,
    tar_bytes,
    tar_special,
    with_flag,
    with_method,
    write_tar_gz_of_fill,
    write_tar_gz_of_many,
    write_zip_of_many,
    write_zip_of_zeros,
    zip_bytes,
    zip_info,
)

CorpusFile = Callable[[str], Path]
Item = ArchiveEntry | EntryError

DOCUMENTS = {
    "pdf/latex-ltnews01.pdf": formats.PDF,
    "epub/debian-policy.epub": formats.EPUB,
    "docx/mammoth-tables.docx": formats.DOCX,
    "html/linux-maintainers.html": formats.HTML,
    "text/debian-policy.txt": formats.TEXT,
}
TAR_MODES = ["w", "w:gz", "w:bz2", "w:xz"]
# What a bomb may cost while it is refused; it would be 10 GiB if it were read.
MEMORY_BOUND = 64 * 1024 * 1024


def _read_all(source: Path | io.BytesIO, limits: ArchiveLimits | None = None) -> list[Item]:
    """Every item, with each entry's bytes read (the errors reading raised in its place)."""
    items: list[Item] = []
    with open_archive(source, limits) as archive:
        for item in archive:
            if isinstance(item, ArchiveEntry):
                try:
                    item.read()
                except EntryError as exc:
                    items.append(exc)
                    continue
            items.append(item)
    return items


def _errors(items: list[Item]) -> dict[str, str]:
    return {i.name: i.code for i in items if isinstance(i, EntryError)}


def _names(items: list[Item]) -> list[str]:
    return [i.name for i in items if isinstance(i, ArchiveEntry)]


def _refused(source: Path | io.BytesIO, limits: ArchiveLimits | None = None) -> ArchiveError:
    with pytest.raises(ArchiveError) as info:
        _read_all(source, limits)
    return info.value


@contextmanager
def _peak_memory() -> Iterator[list[int]]:
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def _corpus(corpus_file: CorpusFile) -> dict[str, bytes]:
    return {rel: corpus_file(rel).read_bytes() for rel in DOCUMENTS}


def test_zip_of_real_documents(corpus_file: CorpusFile) -> None:
    originals = _corpus(corpus_file)
    data = zip_bytes([("dir/", b""), *originals.items()])
    with open_archive(io.BytesIO(data)) as archive:
        assert archive.kind == "zip"
        seen = {}
        for item in archive:
            assert isinstance(item, ArchiveEntry), item
            assert item.media_type == DOCUMENTS[item.name]
            assert item.size == len(originals[item.name])
            pieces = list(item.chunks())
            assert all(len(p) <= 64 * 1024 for p in pieces)
            seen[item.name] = b"".join(pieces)
    assert seen == originals  # the directory entry is skipped, every document intact


@pytest.mark.parametrize("mode", TAR_MODES)
def test_tar_of_real_documents(corpus_file: CorpusFile, tmp_path: Path, mode: str) -> None:
    originals = _corpus(corpus_file)
    directory = tarfile.TarInfo("docs")
    directory.type = tarfile.DIRTYPE
    path = tmp_path / "docs.tar"
    path.write_bytes(tar_bytes([(directory, b""), *originals.items()], mode))
    with open_archive(path) as archive:
        assert archive.kind == ("tar" if mode == "w" else "tar." + mode[2:])
        got = {}
        for item in archive:
            assert isinstance(item, ArchiveEntry), item
            assert item.media_type == DOCUMENTS[item.name]
            got[item.name] = item.read()
    assert got == originals


def test_tar_from_a_stream_that_cannot_seek(corpus_file: CorpusFile) -> None:
    originals = _corpus(corpus_file)

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            chunk = self._data.read(min(len(buffer), 1000))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    pipe = io.BufferedReader(Pipe(tar_bytes(originals.items(), "w:gz")))
    assert not pipe.seekable()
    items = _read_all(pipe)  # type: ignore[arg-type]
    assert sorted(_names(items)) == sorted(originals)


def test_entries_skipped_unread_do_not_disturb_the_next(corpus_file: CorpusFile) -> None:
    originals = _corpus(corpus_file)
    for data in (zip_bytes(originals.items()), tar_bytes(originals.items(), "w:gz")):
        with open_archive(io.BytesIO(data)) as archive:
            items = list(archive)  # none read while the iterator stood on it
            last = items[-1]
            assert isinstance(last, ArchiveEntry)
            with pytest.raises(ValueError, match="moved on"):
                last.read()
        assert [i.name for i in items] == list(originals)


UNSAFE = ["../x", "a/../../x", "/etc/passwd", "C:\\x", "C:x", "a\\..\\b", "bad\x01name"]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_paths_are_refused_per_entry(name: str) -> None:
    for data in (
        zip_bytes([("ok.txt", b"fine"), (name, b"evil")]),
        tar_bytes([("ok.txt", b"fine"), (name, b"evil")]),
    ):
        items = _read_all(io.BytesIO(data))
        assert _names(items) == ["ok.txt"]
        [error] = [i for i in items if isinstance(i, EntryError)]
        assert error.code == "unsafe_path", error
        assert "path" in error.reason


def test_duplicate_names_after_normalisation() -> None:
    entries = [
        ("dir/a.txt", b"one"),
        ("./dir//a.txt", b"two"),
        ("caf\u00e9.txt", b"composed"),
        ("cafe\u0301.txt", b"decomposed"),
    ]
    for data in (zip_bytes(entries), tar_bytes(entries)):
        items = _read_all(io.BytesIO(data))
        assert _names(items) == ["dir/a.txt", "caf\u00e9.txt"]
        assert sorted(_errors(items).values()) == ["duplicate_name", "duplicate_name"]


def test_a_path_over_the_limit() -> None:
    long = "d/" * 600 + "x.txt"
    items = _read_all(io.BytesIO(tar_bytes([(long, b"x"), ("short.txt", b"y")])))
    assert _names(items) == ["short.txt"]
    assert list(_errors(items).values()) == ["path_too_long"]
    assert _names(
        _read_all(io.BytesIO(zip_bytes([(long, b"x")])), ArchiveLimits(max_path_length=2000))
    )


def test_links_and_devices_in_a_tar() -> None:
    members = [
        (tar_special("sym", tarfile.SYMTYPE, "/etc/passwd"), b""),
        (tar_special("hard", tarfile.LNKTYPE, "ok.txt"), b""),
        (tar_special("chr", tarfile.CHRTYPE), b""),
        (tar_special("blk", tarfile.BLKTYPE), b""),
        (tar_special("fifo", tarfile.FIFOTYPE), b""),
        ("ok.txt", b"fine"),
    ]
    for mode in ("w", "w:gz"):
        items = _read_all(io.BytesIO(tar_bytes(members, mode)))
        assert _names(items) == ["ok.txt"]
        assert _errors(items) == {
            "sym": "link",
            "hard": "link",
            "chr": "special_file",
            "blk": "special_file",
            "fifo": "special_file",
        }


def test_links_and_devices_in_a_zip() -> None:
    data = zip_bytes(
        [
            (zip_info("sym", stat.S_IFLNK | 0o777), b"/etc/passwd"),
            (zip_info("dev", stat.S_IFCHR | 0o644), b""),
            (zip_info("fifo", stat.S_IFIFO | 0o644), b""),
            (zip_info("ok.txt", stat.S_IFREG | 0o644), b"fine"),
        ]
    )
    items = _read_all(io.BytesIO(data))
    assert _names(items) == ["ok.txt"]
    assert _errors(items) == {"sym": "link", "dev": "special_file", "fifo": "special_file"}


def test_archives_inside_archives(corpus_file: CorpusFile) -> None:
    inner_zip = zip_bytes([("a.txt", b"hello")])
    inner_tar = tar_bytes([("a.txt", b"hello")])
    inner_tgz = tar_bytes([("a.txt", b"hello")], "w:gz")
    docx = corpus_file("docx/mammoth-tables.docx").read_bytes()
    entries = [
        ("inner.zip", inner_zip),
        ("renamed.txt", inner_zip),  # magic bytes, not the name
        ("inner.tar", inner_tar),
        ("inner.tar.gz", inner_tgz),
        ("doc.docx", docx),  # a ZIP-based document is no archive
    ]
    for data in (zip_bytes(entries), tar_bytes(entries, "w:xz")):
        items = _read_all(io.BytesIO(data))
        assert _names(items) == ["doc.docx"]
        assert set(_errors(items).values()) == {"nested_archive"}
        assert len(_errors(items)) == 4


def test_entries_that_are_not_documents(corpus_file: CorpusFile) -> None:
    odt = corpus_file("odt/live-manual.en.odt").read_bytes()
    entries = [
        ("empty.txt", b""),
        ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(100)),
        ("doc.odt", odt),
        ("ok.md", b"# fine\n"),
    ]
    items = _read_all(io.BytesIO(zip_bytes(entries)))
    assert _names(items) == ["ok.md"]
    assert _errors(items) == {
        "empty.txt": "empty",
        "image.png": "unsupported_type",
        "doc.odt": "unsupported_type",
    }


def test_encrypted_zip_entry() -> None:
    data = with_flag(zip_bytes([("secret.txt", b"hidden"), ("ok.txt", b"fine")]), "secret.txt", 1)
    items = _read_all(io.BytesIO(data))
    assert _names(items) == ["ok.txt"]
    assert _errors(items) == {"secret.txt": "encrypted"}


def test_unsupported_compression_method() -> None:
    data = with_method(zip_bytes([("odd.txt", b"x" * 100), ("ok.txt", b"fine")]), "odd.txt", 9)
    items = _read_all(io.BytesIO(data))
    assert _names(items) == ["ok.txt"]
    assert _errors(items) == {"odd.txt": "unsupported_compression"}


def test_a_zip_needs_a_seekable_file() -> None:
    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    with pytest.raises(ValueError, match="seekable"):
        open_archive(Pipe(zip_bytes([("a.txt", b"a")])))


def test_crc_error_is_the_entry_s_and_the_rest_go_on() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"first " * 100)
        zf.writestr("b.txt", b"second " * 100)
        zf.writestr("c.txt", b"third " * 100)
    items = _read_all(io.BytesIO(damage_entry(buf.getvalue(), "b.txt")))
    assert _names(items) == ["a.txt", "c.txt"]
    error = next(i for i in items if isinstance(i, EntryError))
    assert (error.name, error.code) == ("b.txt", "corrupt")
    assert "CRC" in error.reason


def test_overlapping_zip_entries() -> None:
    data = duplicate_record(zip_bytes([("a.txt", b"x" * 1000)]), "a.txt", "b.txt")
    items = _read_all(io.BytesIO(data))
    assert _names(items) == []
    assert _errors(items) == {"a.txt": "corrupt", "b.txt": "corrupt"}


def _members(count: int) -> list[tuple[str, bytes]]:
    """Text entries of 20,000 bytes that compress only ~2:1 (a cut lands where aimed)."""
    rng = random.Random(count)
    return [(f"f{i}.txt", rng.randbytes(10_000).hex().encode()) for i in range(count)]


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_truncated_tar(mode: str) -> None:
    data = tar_bytes(_members(3), mode)
    plain = tar_bytes(_members(3))
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        second = tf.getmembers()[1]
    # Plain: half-way through the second entry; gzip: half the compressed stream,
    # inside the second or third entry.
    cut = data[: second.offset_data + second.size // 2] if mode == "w" else data[: len(data) // 2]
    items = _read_all(io.BytesIO(cut))
    assert _names(items)[0] == "f0.txt"
    assert "f2.txt" not in _names(items)
    errors = _errors(items)
    assert list(errors.values()) == ["truncated"], items
    if mode == "w":
        assert errors == {"f1.txt": "truncated"}


def test_truncated_tar_entry_skipped_unread() -> None:
    data = tar_bytes(_members(2))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        last = tf.getmembers()[1]
    with open_archive(io.BytesIO(data[: last.offset_data + 10_000])) as archive:
        items = list(archive)
    assert [(type(i).__name__, i.name) for i in items] == [
        ("ArchiveEntry", "f0.txt"),
        ("ArchiveEntry", "f1.txt"),
        ("EntryError", "f1.txt"),
    ]


def test_damaged_tar_header_ends_the_archive_with_an_error() -> None:
    data = bytearray(tar_bytes(_members(3)))
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tf:
        second = tf.getmembers()[1]
    data[second.offset : second.offset + 100] = b"\xff" * 100
    with open_archive(io.BytesIO(bytes(data))) as archive:
        items: list[Item] = []
        with pytest.raises(ArchiveError) as info:
            for item in archive:
                items.append(item)
    assert info.value.code == "corrupt"
    assert _names(items) == ["f0.txt"]


def test_tar_cut_inside_a_header() -> None:
    data = tar_bytes(_members(3))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        second = tf.getmembers()[1]
    with open_archive(io.BytesIO(data[: second.offset + 100])) as archive:
        items: list[Item] = []
        with pytest.raises(ArchiveError) as info:
            for item in archive:
                if isinstance(item, ArchiveEntry):
                    item.read()
                items.append(item)
    assert info.value.code == "truncated"
    assert _names(items) == ["f0.txt"]


def test_huge_pax_header_is_refused_without_reading_it() -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = 2 * GiB
    data = pax.tobuf(format=tarfile.USTAR_FORMAT) + b"99999 path=x\n" + bytes(10240)
    error = _refused(io.BytesIO(data))
    assert error.code == "corrupt"
    assert "at once" in error.reason


@pytest.mark.parametrize(
    ("data", "code", "words"),
    [
        (b"", "empty", "0 bytes"),
        (zip_bytes([]), "empty", "no files"),
        (tar_bytes([]), "empty", "no files"),
        (tar_bytes([], "w:gz"), "empty", "no files"),
        (b"just some text, no archive\n", "not_an_archive", "plain text"),
        (gzip.compress(b"a text, gzipped\n"), "not_an_archive", "gzip"),
        (b"7z\xbc\xaf'\x1c" + bytes(30), "not_an_archive", "7-Zip"),
        (b"PK\x03\x04" + bytes(100), "corrupt", "ZIP"),
    ],
)
def test_whole_archive_refusals(data: bytes, code: str, words: str) -> None:
    error = _refused(io.BytesIO(data))
    assert error.code == code, error
    assert words in error.reason


def test_a_tar_of_only_directories_is_empty() -> None:
    directory = tarfile.TarInfo("only")
    directory.type = tarfile.DIRTYPE
    assert _refused(io.BytesIO(tar_bytes([(directory, b"")]))).code == "empty"
    assert _refused(io.BytesIO(zip_bytes([("only/", b"")]))).code == "empty"


def test_documents_are_not_archives(corpus_file: CorpusFile) -> None:
    pdf = _refused(corpus_file("pdf/latex-ltnews01.pdf"))
    assert pdf.code == "not_an_archive"
    assert "PDF" in pdf.reason
    epub = _refused(corpus_file("epub/live-manual.en.epub"))
    assert epub.code == "not_an_archive"
    assert "EPUB" in epub.reason


def test_a_hundred_thousand_tiny_zip_entries(tmp_path: Path) -> None:
    path = write_zip_of_many(tmp_path / "many.zip", 100_000)
    with pytest.raises(ArchiveLimitError) as info:
        open_archive(path)  # refused from the end record, before any entry is listed
    assert info.value.limit == "max_entries"
    assert "100000" in info.value.reason


def test_a_hundred_thousand_tiny_tar_entries(tmp_path: Path) -> None:
    path = write_tar_gz_of_many(tmp_path / "many.tar.gz", 100_000)
    limits = ArchiveLimits()
    seen = 0
    with open_archive(path, limits) as archive, pytest.raises(ArchiveLimitError) as info:
        for item in archive:
            assert isinstance(item, ArchiveEntry)
            seen += 1
    assert info.value.limit == "max_entries"
    assert seen == limits.max_entries  # stopped at the limit, not at the end


@pytest.mark.parametrize("size", [0, 5, 3 * 1024 * 1024 + 7])
def test_the_bomb_builders_write_valid_archives(tmp_path: Path, size: int) -> None:
    """At a size the standard library can check, the builders' CRC and deflate tricks
    give what zipfile and tarfile accept: the 10 GiB ones are the same construction."""
    with zipfile.ZipFile(write_zip_of_zeros(tmp_path / "z.zip", size)) as zf:
        assert zf.testzip() is None
        assert zf.read("zeros.txt") == bytes(size)
    path = write_tar_gz_of_fill(tmp_path / "t.tar.gz", size, "s.txt", b" ")
    with tarfile.open(path) as tf:
        member = tf.extractfile("s.txt")
        assert member is not None
        assert member.read() == b" " * size
    assert len(gzip.decompress(path.read_bytes())) % tarfile.RECORDSIZE == 0


def test_zip_bomb_is_refused_up_front(tmp_path: Path) -> None:
    path = write_zip_of_zeros(tmp_path / "bomb.zip", 10 * GiB)
    assert path.stat().st_size < 20 * 1024 * 1024
    with pytest.raises(ArchiveLimitError) as info:
        open_archive(path)
    assert info.value.limit == "max_total_bytes"
    # Allowed as a whole, the entry is still refused by what it declares.
    roomy = ArchiveLimits(max_total_bytes=20 * GiB, max_total_ratio=10_000)
    assert _errors(_read_all(path, roomy)) == {"zeros.txt": "too_large"}
    roomier = ArchiveLimits(
        max_total_bytes=20 * GiB, max_total_ratio=10_000, max_entry_bytes=20 * GiB
    )
    assert _errors(_read_all(path, roomier)) == {"zeros.txt": "compression_ratio"}


def test_zip_bomb_whose_headers_lie(tmp_path: Path) -> None:
    path = write_zip_of_zeros(tmp_path / "liar.zip", 10 * GiB, declared_size=4096)
    with _peak_memory() as peak:
        items = _read_all(path)
    assert _errors(items) == {"zeros.txt": "corrupt"}  # its CRC is the 10 GiB's
    assert peak[0] < MEMORY_BOUND


def test_tar_gz_bomb_stops_at_its_header(tmp_path: Path) -> None:
    path = write_tar_gz_of_fill(tmp_path / "bomb.tar.gz", 10 * GiB)
    with _peak_memory() as peak:
        error = _refused(path)
    assert isinstance(error, ArchiveLimitError)
    assert error.limit == "max_total_bytes"
    assert peak[0] < MEMORY_BOUND


def test_tar_gz_bomb_stops_while_it_is_read(tmp_path: Path) -> None:
    """Sizes allowed: only the bytes counted as they are decompressed can stop it."""
    # Spaces, not zeros: text, so the entry passes its type check and is read.
    path = write_tar_gz_of_fill(tmp_path / "bomb.tar.gz", 10 * GiB, "spaces.txt", b" ")
    limits = ArchiveLimits(max_total_bytes=20 * GiB, max_entry_bytes=20 * GiB)
    with _peak_memory() as peak:
        error = _refused(path, limits)
    assert isinstance(error, ArchiveLimitError)
    assert error.limit == "max_total_ratio"
    assert peak[0] < MEMORY_BOUND
    # The entry's own ratio, when the archive's is allowed: the entry stops, the
    # consumer stops (skipping it would decompress the rest of the 10 GiB).
    limits = ArchiveLimits(max_total_bytes=20 * GiB, max_entry_bytes=20 * GiB, max_total_ratio=1e9)
    with _peak_memory() as peak, open_archive(path, limits) as archive:
        items = iter(archive)  # held: a dropped iterator closes its entry
        entry = next(items)
        assert isinstance(entry, ArchiveEntry)
        with pytest.raises(EntryError) as info:
            entry.read()
    assert info.value.code == "compression_ratio"
    assert peak[0] < MEMORY_BOUND


def test_total_limit_counted_across_entries() -> None:
    entries = [(f"f{i}.txt", b"y" * 1000 + b"\n") for i in range(10)]
    limits = ArchiveLimits(max_total_bytes=5_000)
    for data in (zip_bytes(entries), tar_bytes(entries)):
        with pytest.raises(ArchiveLimitError) as info:
            _read_all(io.BytesIO(data), limits)
        assert info.value.limit == "max_total_bytes"


def test_entry_size_limit() -> None:
    entries = [("big.txt", b"z" * 5000), ("small.txt", b"z" * 10)]
    limits = ArchiveLimits(max_entry_bytes=4096)
    for data in (zip_bytes(entries), tar_bytes(entries, "w:bz2")):
        items = _read_all(io.BytesIO(data), limits)
        assert _names(items) == ["small.txt"]
        assert _errors(items) == {"big.txt": "too_large"}


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        ArchiveLimits(max_entries=0)
