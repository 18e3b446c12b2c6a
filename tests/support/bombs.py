"""Archive bombs built as a stream: each compresses a chunk of zeros once and repeats the result,
so a 1,000 MiB member costs a few milliseconds and never more than a chunk of memory.

Concatenated gzip members, xz streams and bzip2 streams are each one valid stream to their
readers (GzipFile, LZMAFile, BZ2File), and a raw deflate block ended by a full flush does not
refer back, so repeating one is a valid deflate stream too.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import random
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from PIL import Image

MIB = 1024 * 1024
CHUNK = MIB
DEFLATE_LEVEL = 9
RAW_DEFLATE = -15  # wbits: a raw deflate stream, as zip entries hold
DOS_DATE_1980 = 0x21  # 1980-01-01
ZIP_VERSION = 20
ZIP_MAX_COUNT = 0xFFFF
NOISE_SEED = 19
Compression = Literal["gz", "bz2", "xz"]
COMPRESS: dict[Compression, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}


@functools.cache
def _compressed_zeros(kind: Compression, size: int) -> bytes:
    return COMPRESS[kind](bytes(size))


def _zeros(kind: Compression, size: int) -> list[bytes]:
    """``size`` zero bytes as concatenated streams of ``kind``."""
    full, rest = divmod(size, CHUNK)
    return [_compressed_zeros(kind, CHUNK)] * full + ([_compressed_zeros(kind, rest)] if rest else [])


def tar_header(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> bytes:
    """One tar header block (GNU format) for a member of ``size`` bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    return info.tobuf(format=tarfile.GNU_FORMAT)


def tar_of_zeros(members: list[tuple[str, int]], kind: Compression) -> bytes:
    """A compressed tar whose members are zero-filled, of the given sizes."""
    parts: list[bytes] = []
    for name, size in members:
        parts.append(COMPRESS[kind](tar_header(name, size)))
        parts.extend(_zeros(kind, size))
        if size % tarfile.BLOCKSIZE:
            parts.append(COMPRESS[kind](bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)))
    parts.append(COMPRESS[kind](bytes(2 * tarfile.BLOCKSIZE)))
    return b"".join(parts)


def tar_pax_bomb(header_bytes: int, kind: Compression) -> bytes:
    """A compressed tar whose first header is a pax header declaring ``header_bytes`` of (zero) data."""
    parts = [COMPRESS[kind](tar_header("././@PaxHeader", header_bytes, tarfile.XHDTYPE))]
    parts.extend(_zeros(kind, header_bytes))
    parts.append(COMPRESS[kind](tar_header("a.png", 0) + bytes(2 * tarfile.BLOCKSIZE)))
    return b"".join(parts)


@dataclass(frozen=True)
class ZipEntry:
    """One zip entry, already compressed; ``declared`` is the uncompressed size its headers claim."""

    name: str
    body: bytes
    crc: int
    size: int
    method: int = zipfile.ZIP_DEFLATED
    declared: int | None = None


@functools.cache
def _deflated_chunk(size: int) -> bytes:
    compressor = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, RAW_DEFLATE)
    return compressor.compress(bytes(size)) + compressor.flush(zlib.Z_FULL_FLUSH)


@functools.cache
def _zeros_crc(size: int) -> int:
    crc = 0
    full, rest = divmod(size, CHUNK)
    zero = bytes(CHUNK)
    for _ in range(full):
        crc = zlib.crc32(zero, crc)
    return zlib.crc32(bytes(rest), crc)


def deflated_zeros(name: str, size: int, *, declared: int | None = None) -> ZipEntry:
    """A deflated entry of ``size`` zero bytes (its headers may declare another size)."""
    full, rest = divmod(size, CHUNK)
    final = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, RAW_DEFLATE)
    body = _deflated_chunk(CHUNK) * full + final.compress(bytes(rest)) + final.flush()
    return ZipEntry(name, body, _zeros_crc(size), size, declared=declared)


def stored(name: str, data: bytes) -> ZipEntry:
    """An uncompressed entry."""
    return ZipEntry(name, data, zlib.crc32(data), len(data), method=zipfile.ZIP_STORED)


def zip_archive(entries: list[ZipEntry]) -> bytes:
    """A zip of prepared entries, headers written by hand (so they may lie)."""
    out = io.BytesIO()
    directory = io.BytesIO()
    for entry in entries:
        offset = out.tell()
        name = entry.name.encode()
        declared = entry.size if entry.declared is None else entry.declared
        sizes = (entry.crc, len(entry.body), declared, len(name))
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", ZIP_VERSION, 0, entry.method, 0, DOS_DATE_1980, *sizes, 0))
        out.write(name)
        out.write(entry.body)
        directory.write(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                ZIP_VERSION,
                ZIP_VERSION,
                0,
                entry.method,
                0,
                DOS_DATE_1980,
                *sizes,
                0,
                0,
                0,
                0,
                0,
                offset,
            )
        )
        directory.write(name)
    start = out.tell()
    out.write(directory.getvalue())
    count = min(len(entries), ZIP_MAX_COUNT)  # readers walk the directory by its size, not this count
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory.getvalue()), start, 0))
    return out.getvalue()


def noise_png(width: int, height: int) -> bytes:
    """A valid PNG of random pixels: it does not compress, so it pads an archive's compressed size."""
    pixels = random.Random(NOISE_SEED).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def zip_directory_bomb(entries: int) -> bytes:
    """A zip whose central directory lists ``entries`` empty stored files with one-character names."""
    return zip_archive([stored(chr(ord("a") + i % 26) + str(i), b"") for i in range(entries)])
