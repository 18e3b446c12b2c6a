"""Unpacking an uploaded archive (zip, tar, tar.gz, tar.bz2, tar.xz) as a stream, to files on disk.

Every entry is read in chunks of READ_CHUNK_BYTES and written to a file of its own, so memory
holds a chunk at a time whatever the archive declares. What is counted is what the decompressor
actually produced: the upload's unpacked bytes (``UnpackBudget``), each archive's ratio to its
compressed size as received, and each entry's size; the first limit passed stops the reading.
Sizes an archive declares are only used to refuse it sooner. Names are left to the caller.

One module on purpose (it is over the ~450-line guide): the zip and tar readers share the budget,
the chunked copy and the mapping of each format's errors, and nothing else uses them.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from shared.errors import InvalidInput, PayloadTooLarge

READ_CHUNK_BYTES = 1024 * 1024
ZIP_MAGIC = b"PK\x03\x04"
ZIP_EMPTY_MAGIC = b"PK\x05\x06"
GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
SNIFF_BYTES = 8
# A small archive is never called a bomb: a tar's headers and record padding alone can be tens of
# times its gzipped size.
RATIO_ALLOWANCE_BYTES = 1024 * 1024
# Bytes of tar headers allowed per file: its header, a pax header and the pax data (POSIX tar
# writes mtime, atime and xattrs there), a GNU long name, padded to blocks. tarfile reads each
# header whole into memory, so one may take at most TAR_HEADER_MAX_BYTES.
TAR_HEADER_BYTES_PER_FILE = 8 * tarfile.BLOCKSIZE
TAR_HEADER_MAX_BYTES = 1024 * 1024
# zip entries read in bounded chunks: zipfile hands bzip2 and lzma data to their decompressors
# without an output limit, so one 4 KiB read of those could inflate to gigabytes.
ZIP_STREAMED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# The zip central directory, as zipfile finds it (zipfile._EndRecData and _EndRecData64).
ZIP_EOCD_BYTES = 22
ZIP_COMMENT_MAX_BYTES = 0xFFFF
ZIP64_LOCATOR = b"PK\x06\x07"
ZIP64_LOCATOR_BYTES = 20
ZIP64_EOCD = b"PK\x06\x06"
ZIP64_EOCD_BYTES = 56
ZIP64_DIRECTORY_SIZE_AT = 40
ZIP_CD_ENTRY = b"PK\x01\x02"
ZIP_CD_ENTRY_BYTES = 46
ZIP_CD_NAME_LENGTHS_AT = 28
# Generous for one central-directory record: a name within MAX_PATH_BYTES, extra fields, a comment.
ZIP_CD_ENTRY_MAX_BYTES = 4096
# What reading a hostile zip can raise: bad CRCs or lengths, broken deflate/bzip2/lzma streams
# (zlib.error, OSError, EOFError, lzma.LZMAError is an Exception of its own), encrypted entries
# (RuntimeError) and unknown compression methods (NotImplementedError).
ZIP_ENTRY_ERRORS: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    ValueError,
)
# What reading a hostile tar or its compression can raise; a chain of pax headers recurses in tarfile.
TAR_ERRORS: tuple[type[Exception], ...] = (
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    RecursionError,
)

Kind = Literal["zip", "tar", "tar.gz", "tar.bz2", "tar.xz"]


class Readable(Protocol):
    """Anything read in sized chunks: an upload's spooled file, a decompressor."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes; b"" at the end."""
        ...

    def close(self) -> object:
        """Release it."""
        ...


class Spool:
    """A private directory with one file per unpacked entry, numbered in order (never named by the archive)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._count = 0

    def new_path(self) -> Path:
        """A fresh file path in the directory."""
        self._count += 1
        return self.root / f"{self._count:06d}"


@dataclass(frozen=True)
class Unpacked:
    """One file taken out of an upload, on disk: its archive name as the caller cleaned it."""

    name: str
    path: Path
    size: int


class UnpackBudget:
    """What one upload has unpacked so far, against its limits; raises as soon as one is passed."""

    def __init__(self, *, max_files: int, max_unpacked_bytes: int, max_compression_ratio: float) -> None:
        self.max_files = max_files
        self.max_unpacked_bytes = max_unpacked_bytes
        self.max_compression_ratio = max_compression_ratio
        self.files = 0
        self.unpacked = 0

    def add_files(self, count: int = 1) -> None:
        """Count files (entries of any kind) against max_files."""
        self.files += count
        if self.files > self.max_files:
            raise PayloadTooLarge(f"the upload holds more than {self.max_files} files", field="files")

    def expect(self, size: int) -> None:
        """Refuse a declared size that would pass max_unpacked_bytes, before inflating any of it."""
        if self.unpacked + size > self.max_unpacked_bytes:
            raise PayloadTooLarge(f"the upload unpacks to more than {self.max_unpacked_bytes} bytes", field="files")

    def add(self, size: int) -> None:
        """Count bytes actually produced."""
        self.unpacked += size
        if self.unpacked > self.max_unpacked_bytes:
            raise PayloadTooLarge(f"the upload unpacks to more than {self.max_unpacked_bytes} bytes", field="files")


class _Ratio:
    """Bytes one archive inflated, against the ratio limit times its compressed size as received."""

    def __init__(self, name: str, compressed: int, limit: float) -> None:
        self.name = name
        self.compressed = compressed
        self.limit = limit
        self.inflated = 0

    def add(self, size: int) -> None:
        self.inflated += size
        if self.inflated > self.limit * self.compressed + RATIO_ALLOWANCE_BYTES:
            raise PayloadTooLarge(
                f"{self.name}: expands more than {self.limit:.0f}x its {self.compressed} bytes (zip bomb?)",
                field="files",
            )


def _entry_too_large(name: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"{name}: over {limit} bytes, the most one image may take", field="files")


def copy_entry(name: str, read: Callable[[int], bytes], dest: Path, *, limit: int, count: Callable[[int], None]) -> int:
    """Copy ``read``'s chunks to ``dest`` until it is exhausted; ``count`` sees each chunk's size."""
    size = 0
    with dest.open("wb") as out:
        while chunk := read(READ_CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise _entry_too_large(name, limit)
            count(len(chunk))
            out.write(chunk)
    return size


def file_size(file: BinaryIO) -> int:
    """A seekable file's size; leaves it at its start."""
    size = file.seek(0, io.SEEK_END)
    file.seek(0)
    return size


def sniff(file: BinaryIO) -> Kind:
    """What the upload may be, by content (never by name); "tar" is only confirmed by opening it."""
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    if head.startswith((ZIP_MAGIC, ZIP_EMPTY_MAGIC)):
        return "zip"
    if head.startswith(GZIP_MAGIC):
        return "tar.gz"
    if head.startswith(BZIP2_MAGIC):
        return "tar.bz2"
    if head.startswith(XZ_MAGIC):
        return "tar.xz"
    return "tar"


# --- zip ------------------------------------------------------------------------------------


def _zip_directory(file: BinaryIO, size: int) -> tuple[int, int] | None:
    """(offset, length) of the central directory, found as zipfile finds it; None if there is none."""
    tail_bytes = min(size, ZIP_EOCD_BYTES + ZIP_COMMENT_MAX_BYTES)
    file.seek(size - tail_bytes)
    tail = file.read(tail_bytes)
    if tail[-ZIP_EOCD_BYTES:].startswith(ZIP_EMPTY_MAGIC) and tail.endswith(b"\0\0"):
        at = len(tail) - ZIP_EOCD_BYTES
    else:
        at = tail.rfind(ZIP_EMPTY_MAGIC)
    if at < 0 or at + ZIP_EOCD_BYTES > len(tail):
        return None
    location = size - tail_bytes + at
    length: int = struct.unpack("<L", tail[at + 12 : at + 16])[0]
    if location >= ZIP64_LOCATOR_BYTES + ZIP64_EOCD_BYTES:
        file.seek(location - ZIP64_LOCATOR_BYTES)
        if file.read(len(ZIP64_LOCATOR)) == ZIP64_LOCATOR:
            record_at = location - ZIP64_LOCATOR_BYTES - ZIP64_EOCD_BYTES
            file.seek(record_at)
            record = file.read(ZIP64_EOCD_BYTES)
            if record.startswith(ZIP64_EOCD):
                length = struct.unpack("<Q", record[ZIP64_DIRECTORY_SIZE_AT : ZIP64_DIRECTORY_SIZE_AT + 8])[0]
                location = record_at
    start = location - length
    return (start, length) if start >= 0 else None


def check_zip_directory(file: BinaryIO, size: int, *, budget: UnpackBudget) -> None:
    """Count a zip's central-directory records against max_files before zipfile parses them all into memory."""
    found = _zip_directory(file, size)
    file.seek(0)
    if found is None:
        return  # zipfile reports what is wrong
    start, length = found
    room = budget.max_files - budget.files
    if length > room * ZIP_CD_ENTRY_MAX_BYTES:
        raise PayloadTooLarge(
            f"the archive's directory is {length} bytes, more than {budget.max_files} files take", field="files"
        )
    count = 0
    offset = 0
    while offset < length:
        file.seek(start + offset)
        record = file.read(ZIP_CD_ENTRY_BYTES)
        if len(record) != ZIP_CD_ENTRY_BYTES or not record.startswith(ZIP_CD_ENTRY):
            break  # zipfile reports what is wrong
        count += 1
        if count > room:
            raise PayloadTooLarge(f"the upload holds more than {budget.max_files} files", field="files")
        name, extra, comment = struct.unpack("<3H", record[ZIP_CD_NAME_LENGTHS_AT : ZIP_CD_NAME_LENGTHS_AT + 6])
        offset += ZIP_CD_ENTRY_BYTES + name + extra + comment
    file.seek(0)


def _guarded(read: Callable[[int], bytes], name: str, errors: tuple[type[Exception], ...]) -> Callable[[int], bytes]:
    """``read``, with the archive's own errors turned into an InvalidInput naming the entry."""

    def guarded(size: int) -> bytes:
        try:
            return read(size)
        except errors as exc:
            # A CRC or length mismatch (headers that lie), a broken stream, encryption, an
            # unsupported compression method.
            raise InvalidInput(f"archive entry {name!r} cannot be read: {exc}", field="files") from exc

    return guarded


def _unpack_zip(
    file: BinaryIO,
    size: int,
    *,
    display: str,
    budget: UnpackBudget,
    entry_name: Callable[[str], str | None],
    max_entry_bytes: int,
    spool: Spool,
) -> list[Unpacked]:
    check_zip_directory(file, size, budget=budget)
    try:
        archive = zipfile.ZipFile(file)
    except ZIP_ENTRY_ERRORS as exc:
        raise InvalidInput(f"corrupt zip archive: {exc}", field="files") from exc
    out: list[Unpacked] = []
    ratio = _Ratio(display, size, budget.max_compression_ratio)
    with archive:
        infos = archive.infolist()
        budget.add_files(len(infos))
        declared = sum(i.file_size for i in infos)
        budget.expect(declared)
        if declared > budget.max_compression_ratio * max(size, 1):
            raise PayloadTooLarge(
                f"archive expands {declared / max(size, 1):.0f}x; the limit is {budget.max_compression_ratio:.0f}x"
                " (zip bomb?)",
                field="files",
            )

        def count(chunk: int) -> None:
            budget.add(chunk)
            ratio.add(chunk)

        for info in infos:
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise InvalidInput(f"archive entry {info.filename!r} is a symbolic link", field="files")
            name = entry_name(info.filename)
            if name is None:
                continue
            if info.compress_type not in ZIP_STREAMED_METHODS:
                raise InvalidInput(
                    f"archive entry {info.filename!r} uses compression method {info.compress_type}; "
                    "only stored and deflate entries are accepted",
                    field="files",
                )
            if info.file_size > max_entry_bytes:
                raise _entry_too_large(info.filename, max_entry_bytes)
            dest = spool.new_path()
            try:
                handle = archive.open(info)
            except ZIP_ENTRY_ERRORS as exc:
                raise InvalidInput(f"archive entry {info.filename!r} cannot be read: {exc}", field="files") from exc
            with handle:
                read = _guarded(handle.read, info.filename, ZIP_ENTRY_ERRORS)
                written = copy_entry(info.filename, read, dest, limit=max_entry_bytes, count=count)
            out.append(Unpacked(name, dest, written))
    return out


# --- tar --------------------------------------------------------------------------------------


class _TarStream:
    """A decompressed tar stream as tarfile reads it: forward only, every byte counted (``count``),
    and header bytes (whatever is read outside an entry) capped, since tarfile reads them whole."""

    def __init__(self, stream: Readable, *, count: Callable[[int], None], header_limit: int) -> None:
        self._stream = stream
        self._count = count
        self._header_limit = header_limit
        self._header_bytes = 0
        self._pos = 0
        self.in_entry = False

    @contextlib.contextmanager
    def entry(self) -> Iterator[None]:
        """Reads inside this block are an entry's data, not headers."""
        self.in_entry = True
        try:
            yield
        finally:
            self.in_entry = False

    def _take(self, size: int) -> bytes:
        data = self._stream.read(size)
        self._pos += len(data)
        self._count(len(data))
        return data

    def read(self, size: int = -1, /) -> bytes:
        """Read ``size`` bytes (never "all": tarfile always says how many)."""
        if size < 0:
            raise InvalidInput("corrupt tar archive: an unbounded read", field="files")
        if not self.in_entry:
            if size > TAR_HEADER_MAX_BYTES:
                raise PayloadTooLarge(
                    f"the archive holds a tar header of {size} bytes; the limit is {TAR_HEADER_MAX_BYTES}",
                    field="files",
                )
            self._header_bytes += size
            if self._header_bytes > self._header_limit:
                raise PayloadTooLarge(
                    f"the archive's tar headers take more than {self._header_limit} bytes", field="files"
                )
        return self._take(size)

    def seek(self, pos: int, whence: int = io.SEEK_SET, /) -> int:
        """Skip forward to ``pos``, inflating (and counting) what lies between."""
        target = pos if whence == io.SEEK_SET else self._pos + pos
        if whence not in (io.SEEK_SET, io.SEEK_CUR) or target < self._pos:
            raise InvalidInput("corrupt tar archive: it would be read backwards", field="files")
        while self._pos < target and self._take(min(READ_CHUNK_BYTES, target - self._pos)):
            pass
        return self._pos

    def tell(self) -> int:
        """Position in the decompressed stream."""
        return self._pos

    def seekable(self) -> bool:
        """Forward seeks only; tarfile needs no more."""
        return True

    def readable(self) -> bool:
        """Always."""
        return True

    def write(self, _data: bytes, /) -> int:
        """Never: the stream is read only."""
        raise io.UnsupportedOperation("read only")

    def close(self) -> None:
        """The caller closes the underlying stream."""


def _decompressed(file: BinaryIO, kind: Kind) -> Readable:
    if kind == "tar.gz":
        return gzip.GzipFile(fileobj=file, mode="rb")
    if kind == "tar.bz2":
        return bz2.BZ2File(file)
    if kind == "tar.xz":
        return lzma.LZMAFile(file)
    return file


def _next_member(archive: tarfile.TarFile) -> tarfile.TarInfo | None:
    try:
        member = archive.next()
    except TAR_ERRORS as exc:
        raise InvalidInput(f"corrupt tar archive: {exc}", field="files") from exc
    # Keep no list of every member (nor its pax headers) in memory; the stubs omit this attribute.
    archive.members.clear()  # type: ignore[attr-defined]
    return member


def _unpack_tar(
    file: BinaryIO,
    size: int,
    *,
    kind: Kind,
    display: str,
    budget: UnpackBudget,
    entry_name: Callable[[str], str | None],
    max_entry_bytes: int,
    spool: Spool,
) -> list[Unpacked] | None:
    ratio = _Ratio(display, size, budget.max_compression_ratio)

    def count(chunk: int) -> None:
        budget.add(chunk)
        ratio.add(chunk)

    header_limit = (budget.max_files - budget.files + 1) * TAR_HEADER_BYTES_PER_FILE
    stream = _decompressed(file, kind)
    try:
        meter = _TarStream(stream, count=count, header_limit=header_limit)
        before = budget.unpacked
        try:
            archive = tarfile.open(fileobj=meter, mode="r:")  # noqa: SIM115 - closed by the with below
        except TAR_ERRORS:
            budget.unpacked = before
            return None  # not a tar after all: it is checked as an image
        out: list[Unpacked] = []
        with archive:
            while (member := _next_member(archive)) is not None:
                budget.add_files()
                if member.isdir():
                    continue
                if member.issym() or member.islnk():
                    raise InvalidInput(f"archive entry {member.name!r} is a link", field="files")
                if not member.isfile():
                    raise InvalidInput(f"archive entry {member.name!r} is not a regular file", field="files")
                if member.issparse():
                    raise InvalidInput(f"archive entry {member.name!r} is a sparse file", field="files")
                budget.expect(member.size)
                name = entry_name(member.name)
                if name is None:
                    continue
                if member.size > max_entry_bytes:
                    raise _entry_too_large(member.name, max_entry_bytes)
                dest = spool.new_path()
                with meter.entry():
                    handle = archive.extractfile(member)
                    if handle is None:  # pragma: no cover - regular files always have a handle
                        continue
                    read = _guarded(handle.read, member.name, TAR_ERRORS)
                    written = copy_entry(member.name, read, dest, limit=max_entry_bytes, count=_counted_by_meter)
                out.append(Unpacked(name, dest, written))
        return out
    finally:
        if stream is not file:
            stream.close()  # the decompressor only: the upload's file is the caller's


def _counted_by_meter(_size: int) -> None:
    """A tar entry's bytes were counted as the stream produced them."""


def unpack_archive(
    file: BinaryIO,
    *,
    display: str,
    budget: UnpackBudget,
    entry_name: Callable[[str], str | None],
    max_entry_bytes: int,
    spool: Spool,
) -> list[Unpacked] | None:
    """Unpack ``file`` into ``spool``; None if it is not an archive.

    ``entry_name`` cleans an entry's name (None: skip the entry; it raises for an unsafe one).
    """
    kind = sniff(file)
    size = file_size(file)
    if kind == "zip":
        return _unpack_zip(
            file,
            size,
            display=display,
            budget=budget,
            entry_name=entry_name,
            max_entry_bytes=max_entry_bytes,
            spool=spool,
        )
    unpacked = _unpack_tar(
        file,
        size,
        kind=kind,
        display=display,
        budget=budget,
        entry_name=entry_name,
        max_entry_bytes=max_entry_bytes,
        spool=spool,
    )
    file.seek(0)
    return unpacked
