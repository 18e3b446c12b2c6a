"""shared/names.py: the rule every user-chosen name passes (control characters, UTF-8, 255 bytes a name)."""

from __future__ import annotations

import pytest

from shared.errors import InvalidInput
from shared.names import MAX_NAME_BYTES, MAX_PATH_BYTES, check_name, control_character


@pytest.mark.parametrize(
    "name",
    [
        "a" * MAX_NAME_BYTES,
        "é" * (MAX_NAME_BYTES // 2),  # 254 bytes
        "class/" + "a" * MAX_NAME_BYTES,
        "/".join(["a" * 99] * 5),  # 499 bytes of short names
        "\ufffd.png",
        "a b.png",
    ],
)
def test_accepted(name: str) -> None:
    assert check_name(name, field="files") == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a" * (MAX_NAME_BYTES + 1), "256 bytes"),
        ("é" * 128, "256 bytes"),  # 128 characters
        ("\U0001f600" * 64, "256 bytes"),  # 64 characters
        ("ok/" + "b" * 300 + "/c", "300 bytes"),
        ("/".join(["a" * 100] * 5), f"the limit is {MAX_PATH_BYTES}"),  # 504 bytes
        ("a\x00b", "U+0000"),
        ("a\nb", "U+000A"),
        ("tab\there", "U+0009"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("lone\udcff", "not valid UTF-8"),
    ],
)
def test_refused_naming_the_field(name: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_name(name, field="files")
    assert refused.value.field == "files"
    assert reason in refused.value.message
    assert refused.value.message.startswith("files: ")


def test_control_character_finds_the_first() -> None:
    assert control_character("plain") is None
    assert control_character("a\x1fb\x00") == "U+001F"
