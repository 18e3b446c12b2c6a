"""Job error text as stored: readable in any client, bounded in size."""

from __future__ import annotations

from workers.runtime import MAX_ERROR_CHARS, clean_error_text


def test_terminal_colour_codes_are_removed() -> None:
    # torch's weights_only refusal, as it prints it: bold and coloured
    raw = "Weights only load failed. \x1b[1mWeightsUnpickler error: \x1b[0mUnsupported global: \x1b[31mposix.system\x1b[0m"
    assert clean_error_text(raw) == "Weights only load failed. WeightsUnpickler error: Unsupported global: posix.system"


def test_long_text_is_cut_to_the_limit_and_plain_text_kept() -> None:
    assert clean_error_text("x" * (MAX_ERROR_CHARS + 50)) == "x" * MAX_ERROR_CHARS
    assert clean_error_text("params.size: 512 px [too large]") == "params.size: 512 px [too large]"
