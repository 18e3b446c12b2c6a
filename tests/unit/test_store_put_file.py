"""ObjectStore.put_file: an output written to a file (style.apply's batch zip) is stored without being read
into memory whole, in the local store here (tests/integration/test_style_apply.py covers the S3 store).

Each test reads Given / When / Then."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.errors import NotFound
from shared.storage import LocalObjectStore


def test_put_file_stores_the_files_bytes_and_replaces_what_was_there(tmp_path: Path) -> None:
    # Given a store holding an older object under the key, and a 3 MiB file
    store = LocalObjectStore(tmp_path / "store")
    store.put("jobs/j/outputs/a1/outputs.zip", b"old")
    source = tmp_path / "batch.zip"
    data = os.urandom(3 * 1024 * 1024)
    source.write_bytes(data)
    # When the file is put under the key
    store.put_file("jobs/j/outputs/a1/outputs.zip", source, content_type="application/zip")
    # Then the object is the file's bytes, the file is left as it was, and no temp file is left behind
    assert store.get("jobs/j/outputs/a1/outputs.zip") == data
    assert source.read_bytes() == data
    assert [p.name for p in (tmp_path / "store/jobs/j/outputs/a1").iterdir()] == ["outputs.zip"]


def test_a_missing_file_stores_nothing(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError):
        store.put_file("jobs/j/outputs/a1/outputs.zip", tmp_path / "nope.zip")
    with pytest.raises(NotFound):
        store.get("jobs/j/outputs/a1/outputs.zip")
    assert list((tmp_path / "store/jobs/j/outputs/a1").iterdir()) == []
