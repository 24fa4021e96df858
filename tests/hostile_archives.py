"""Builders of hostile archives for the archive reader's tests.

The bombs are written without compressing their gigabytes: after a full flush,
deflate encodes each further MiB of zeros as the same bytes, so a 10 GiB entry
is one block repeated, and its CRC-32 comes from zlib's combine arithmetic. The
files stay ~10 MB and take well under a second to write.
"""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

GiB = 1024**3
_BLOCK = 1024 * 1024


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine)."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def crc32_of_repeat(unit: bytes, count: int) -> int:
    """CRC-32 of `count` copies of `unit`, by doubling."""
    result, length = 0, 0
    power, power_len = zlib.crc32(unit), len(unit)
    while count:
        if count & 1:
            result = crc32_combine(result, power, power_len) if length else power
            length += power_len
        power = crc32_combine(power, power, power_len)
        power_len *= 2
        count >>= 1
    return result


def crc32_of_fill(count: int, fill: bytes = b"\0") -> int:
    """CRC-32 of `count` bytes of `fill`."""
    whole, rest = divmod(count, _BLOCK)
    crc = crc32_of_repeat(fill * _BLOCK, whole)
    return crc32_combine(crc, zlib.crc32(fill * rest), rest) if whole else zlib.crc32(fill * rest)


def deflate_fill(
    count: int, prefix: bytes = b"", fill: bytes = b"\0", suffix: bytes = b""
) -> Iterator[bytes]:
    """A raw deflate stream of `prefix`, `count` bytes of `fill`, then `suffix`."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    yield c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    whole, rest = divmod(count, _BLOCK)
    block = fill * _BLOCK
    if whole:
        first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
        yield first
        if whole > 1:
            again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
            assert again == first, "deflate did not repeat itself; the trick needs it"
            for _ in range(whole - 1):
                yield again
    yield c.compress(fill * rest + suffix) + c.flush()


def write_zip_of_zeros(
    path: Path, size: int, name: str = "zeros.txt", *, declared_size: int | None = None
) -> Path:
    """A ZIP with one deflated entry of `size` zeros; `declared_size` lies about it."""
    crc = crc32_of_fill(size)
    compressed = 0
    encoded = name.encode()
    usize = size if declared_size is None else declared_size
    with path.open("wb") as f:
        header_at = f.tell()
        big = usize >= 0xFFFFFFFF
        # Sizes go in the ZIP64 extra field once they do not fit 32 bits; patched below.
        f.write(b"\0" * (30 + len(encoded) + (20 if big else 0)))
        for piece in deflate_fill(size):
            f.write(piece)
            compressed += len(piece)
        big = big or compressed >= 0xFFFFFFFF
        sizes = (0xFFFFFFFF, 0xFFFFFFFF) if big else (compressed, usize)
        extra = struct.pack("<HHQQ", 1, 16, usize, compressed) if big else b""
        local = struct.pack(
            "<4s5H3L2H", b"PK\x03\x04", 45, 0, 8, 0, 0x21, crc, *sizes, len(encoded), len(extra)
        )
        directory_at = f.tell()
        central = struct.pack(
            "<4s4B4H3L5H2L",
            b"PK\x01\x02",
            45,
            3,
            45,
            0,
            0,
            8,
            0,
            0x21,
            crc,
            *sizes,
            len(encoded),
            len(extra),
            0,
            0,
            0,
            (stat.S_IFREG | 0o644) << 16,
            header_at,
        )
        record = central + encoded + extra
        f.write(record)
        f.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(record), directory_at, 0))
        f.seek(header_at)
        f.write(local + encoded + extra)
    return path


def write_tar_gz_of_fill(
    path: Path, size: int, name: str = "zeros.txt", fill: bytes = b"\0"
) -> Path:
    """A tar.gz with one entry of `size` bytes of `fill` (a GNU header: sizes past 8 GiB)."""
    info = tarfile.TarInfo(name)
    info.size = size
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    data_end = len(header) + -(-size // 512) * 512
    total = -(-(data_end + 1024) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE
    padding = bytes(total - len(header) - size)  # the entry's, the end marker, the record's
    crc = crc32_combine(zlib.crc32(header), crc32_of_fill(size, fill), size)
    crc = crc32_combine(crc, zlib.crc32(padding), len(padding))
    with path.open("wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")
        for piece in deflate_fill(size, header, fill, padding):
            f.write(piece)
        f.write(struct.pack("<LL", crc, total & 0xFFFFFFFF))
    return path


def write_zip_of_many(path: Path, count: int) -> Path:
    buf = io.BytesIO()  # in memory first: zipfile seeks back for every entry it writes
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(count):
            zf.writestr(f"f{i:07d}.txt", b"x")
    path.write_bytes(buf.getvalue())
    return path


def write_tar_gz_of_many(path: Path, count: int) -> Path:
    """`count` one-byte entries, headers patched from one template (fast)."""
    template = tarfile.TarInfo("f0000000.txt")
    template.size = 1
    block = bytearray(template.tobuf(format=tarfile.USTAR_FORMAT))
    base = sum(block) - sum(block[148:156]) + 8 * 32
    old = sum(b"f0000000.txt")
    data = b"x" + b"\0" * 511
    with path.open("wb") as raw, _gzip(raw) as out:
        for i in range(count):
            name = f"f{i:07d}.txt".encode()
            block[0 : len(name)] = name
            block[148:156] = b"%06o\0 " % (base - old + sum(name))
            out.write(bytes(block) + data)
        out.write(b"\0" * tarfile.RECORDSIZE)
    return path


def _gzip(raw: io.BufferedWriter) -> io.BufferedIOBase:
    import gzip

    return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1)


def zip_bytes(entries: Iterable[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_info(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    return info


def tar_bytes(
    members: Iterable[tuple[str, bytes] | tuple[tarfile.TarInfo, bytes]], mode: str = "w"
) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for member, data in members:
            info = member if isinstance(member, tarfile.TarInfo) else tarfile.TarInfo(member)
            if info.isreg():
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def tar_special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def _directory(data: bytes) -> Iterator[tuple[int, str]]:
    """(offset of the central directory record, name) for each entry."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        at, infos = zf.start_dir, zf.infolist()
    for info in infos:
        nlen, xlen, clen = struct.unpack_from("<3H", data, at + 28)
        yield at, info.filename
        at += 46 + nlen + xlen + clen


def with_flag(data: bytes, name: str, bit: int) -> bytes:
    """`data` with general-purpose `bit` set on entry `name` (local and central)."""
    out = bytearray(data)
    for at, entry in _directory(data):
        if entry == name:
            (local,) = struct.unpack_from("<L", data, at + 42)
            for flags_at in (at + 8, local + 6):
                (flags,) = struct.unpack_from("<H", out, flags_at)
                struct.pack_into("<H", out, flags_at, flags | bit)
            return bytes(out)
    raise KeyError(name)


def damage_entry(data: bytes, name: str) -> bytes:
    """`data` with one byte of entry `name`'s stored data flipped (its CRC fails)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size > 0
    nlen, xlen = struct.unpack_from("<2H", data, info.header_offset + 26)
    at = info.header_offset + 30 + nlen + xlen
    out = bytearray(data)
    out[at] ^= 0xFF
    return bytes(out)


def duplicate_record(data: bytes, name: str, alias: str) -> bytes:
    """A second directory record, named `alias`, for `name`'s data: overlapping entries."""
    for at, entry in _directory(data):
        if entry == name:
            nlen, xlen, clen = struct.unpack_from("<3H", data, at + 28)
            record = bytearray(data[at : at + 46 + nlen + xlen + clen])
            break
    else:
        raise KeyError(name)
    encoded = alias.encode()
    struct.pack_into("<H", record, 28, len(encoded))
    record = record[:46] + encoded + record[46 + nlen :]
    end = data.rfind(b"PK\x05\x06")
    entries, cd_size, cd_at = struct.unpack_from("<HLL", data, end + 10)
    trailer = bytearray(data[end:])
    struct.pack_into("<HHLL", trailer, 8, entries + 1, entries + 1, cd_size + len(record), cd_at)
    return data[:end] + bytes(record) + bytes(trailer)


def with_method(data: bytes, name: str, method: int) -> bytes:
    """`data` with entry `name`'s compression method set to `method` (local and central)."""
    out = bytearray(data)
    for at, entry in _directory(data):
        if entry == name:
            (local,) = struct.unpack_from("<L", data, at + 42)
            struct.pack_into("<H", out, at + 10, method)
            struct.pack_into("<H", out, local + 8, method)
            return bytes(out)
    raise KeyError(name)
