"""The admin CLI's --max-storage values: bytes, binary units, or none; anything else is refused with the reason."""

from __future__ import annotations

import argparse

import pytest

from shared.cli import _storage_quota


@pytest.mark.parametrize(
    ("value", "parsed"),
    [("none", None), ("NONE", None), ("0", 0), ("1000", 1000), ("500MiB", 500 * 1024**2), ("20GiB", 20 * 1024**3),
     ("1.5TiB", int(1.5 * 1024**4)), ("64KiB", 65536), ("10B", 10)],
)  # fmt: skip
def test_a_quota_is_bytes_with_an_optional_binary_unit_or_none(value: str, parsed: int | None) -> None:
    assert _storage_quota(value) == parsed


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-1", "cannot be negative"),
        ("5XB", "KiB, MiB, GiB or TiB"),
        ("GiB", "a number of bytes"),
        ("lots", "or none; got lots"),
    ],
)
def test_anything_else_is_refused_with_the_reason(value: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=reason):
        _storage_quota(value)
