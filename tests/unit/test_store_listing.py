"""The local store's listing and single delete, as the orphan collector uses them (the S3 store's are covered by
tests/integration/test_orphans.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from shared.storage import LocalObjectStore


def test_listing_gives_every_file_under_a_prefix_with_size_and_time_and_skips_writes_in_flight(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put("jobs/a/checkpoints/a1-step-1.pt", b"12345")
    store.put("jobs/a/samples/a1/x.png", b"12")
    store.put("uploads/t/u/0.png", b"1")
    (tmp_path / "objects" / "jobs" / "a" / ".tmp-half-written").write_bytes(b"partial")
    old = datetime(2020, 1, 2, tzinfo=UTC).timestamp()
    os.utime(tmp_path / "objects" / "jobs" / "a" / "samples" / "a1" / "x.png", (old, old))
    listed = {o.key: o for o in store.listing("jobs/")}
    assert set(listed) == {"jobs/a/checkpoints/a1-step-1.pt", "jobs/a/samples/a1/x.png"}
    assert listed["jobs/a/checkpoints/a1-step-1.pt"].size == 5
    assert listed["jobs/a/samples/a1/x.png"].modified == datetime(2020, 1, 2, tzinfo=UTC)
    assert {o.key for o in store.listing("")} == set(listed) | {"uploads/t/u/0.png"}
    assert list(store.listing("nothing/")) == []


def test_delete_removes_one_object_and_a_missing_one_is_no_error(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("jobs/a/x", b"1")
    store.put("jobs/a/y", b"2")
    store.delete("jobs/a/x")
    store.delete("jobs/a/x")
    assert not store.exists("jobs/a/x") and store.exists("jobs/a/y")
