"""shared/archives.py on its own: the central directory is found where zipfile finds it, and the
tar stream counts every byte it inflates and refuses to be read backwards."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from shared.archives import (
    ZIP_CD_ENTRY_MAX_BYTES,
    Spool,
    UnpackBudget,
    _TarStream,
    _zip_directory,
    check_zip_directory,
    unpack_archive,
)
from shared.errors import InvalidInput, PayloadTooLarge

ZIP64_ENTRIES = 0x10001  # one more than a plain end-of-directory record can count


def zipped(count: int, *, comment: bytes = b"", prefix: bytes = b"") -> bytes:
    """A zip of ``count`` empty entries, with a comment and data before it (a self-extractor) if asked."""
    buffer = io.BytesIO()
    buffer.write(prefix)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = comment
        for i in range(count):
            archive.writestr(f"{i}.png", b"")
    return buffer.getvalue()


def budget(max_files: int = 10_000, max_unpacked_bytes: int = 1 << 30) -> UnpackBudget:
    """A budget with the default ratio."""
    return UnpackBudget(max_files=max_files, max_unpacked_bytes=max_unpacked_bytes, max_compression_ratio=200.0)


@pytest.mark.parametrize(
    "data",
    [zipped(3), zipped(3, comment=b"made by hand"), zipped(3, prefix=b"#!/bin/sh\n" * 100)],
    ids=["plain", "comment", "prepended"],
)
def test_the_central_directory_is_where_zipfile_finds_it(data: bytes) -> None:
    # When the directory is located by hand and by zipfile
    found = _zip_directory(io.BytesIO(data), len(data))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        # Then they agree
        assert found is not None
        assert found[0] == archive.start_dir


def test_a_zip64_directory_is_counted_before_zipfile_parses_it() -> None:
    # Given a zip64 archive (over 65,535 entries) and a limit of 10,000 files
    data = zipped(ZIP64_ENTRIES)
    found = _zip_directory(io.BytesIO(data), len(data))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert found is not None and found[0] == archive.start_dir
    # When its directory is checked, Then it is refused by count
    with pytest.raises(PayloadTooLarge, match="more than 10000 files"):
        check_zip_directory(io.BytesIO(data), len(data), budget=budget())
    # ...and by size alone when the limit is small enough
    with pytest.raises(PayloadTooLarge, match="directory is"):
        check_zip_directory(io.BytesIO(data), len(data), budget=budget(max_files=found[1] // ZIP_CD_ENTRY_MAX_BYTES))


def test_the_tar_stream_counts_what_it_inflates_and_only_goes_forward() -> None:
    # Given a counted stream over 10 KiB
    counted: list[int] = []
    stream = _TarStream(io.BytesIO(bytes(10_240)), count=counted.append, header_limit=1024)
    # When headers are read and data is skipped, Then every byte is counted
    assert len(stream.read(512)) == 512
    assert stream.seek(4096) == 4096
    assert sum(counted) == 4096
    # ...reading backwards is refused, and so are headers over their limit
    with pytest.raises(InvalidInput, match="backwards"):
        stream.seek(100)
    with pytest.raises(PayloadTooLarge, match="tar headers take more than 1024 bytes"):
        stream.read(1024)
    # ...but an entry's data is not a header
    with stream.entry():
        assert len(stream.read(4096)) == 4096


def test_a_small_compressible_tar_is_within_the_ratio_allowance(tmp_path: Path) -> None:
    # Given a tar.gz of a 512 KiB flat image file: over 200x, but small
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("flat.bmp")
        info.size = 512 * 1024
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    data = buffer.getvalue()
    assert info.size > 200 * len(data)
    # When it is unpacked
    counted = budget()
    unpacked = unpack_archive(
        io.BytesIO(data),
        display="a.tgz",
        budget=counted,
        entry_name=str,
        max_entry_bytes=1 << 20,
        spool=Spool(tmp_path),
    )
    # Then its entry is on disk, and the budget counted the whole stream (headers and padding too)
    assert unpacked is not None and [u.size for u in unpacked] == [info.size]
    assert unpacked[0].path.stat().st_size == info.size
    # its header, its data and the first end-of-archive block: tarfile stops there, before the padding
    assert counted.unpacked == tarfile.BLOCKSIZE + info.size + tarfile.BLOCKSIZE < len(gzip.decompress(data))


def test_a_file_that_is_not_a_tar_is_left_to_the_image_checks(tmp_path: Path) -> None:
    # Given bytes that are neither a zip nor a tar, and a budget
    counted = budget()
    # When they are offered as an archive, Then they are not one, and nothing is counted
    source = io.BytesIO(b"\x89PNG\r\n\x1a\n" + bytes(600))
    assert (
        unpack_archive(
            source, display="a.png", budget=counted, entry_name=str, max_entry_bytes=1 << 20, spool=Spool(tmp_path)
        )
        is None
    )
    assert counted.unpacked == 0
    assert source.tell() == 0
