"""bench/apply_batch.py in a tiny configuration, so the benchmark can't rot: it seeds a model and two uploads in
a fresh database, runs both style.apply jobs in worker processes, checks their zips and prints its figures.

Each test reads Given / When / Then."""

from __future__ import annotations

import re

import pytest

from bench.apply_batch import main, picture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RESULT = re.compile(r"^  (\d+) pictures at 256 px: [\d.]+ s, ([\d.]+) pictures/s, peak memory growth (\d+) MiB$", re.M)
VERDICT = re.compile(r"^peak growth 5 pictures / 2 pictures: ([\d.]+)x \(target <= 1.5x: (PASS|FAIL)\)", re.M)


def test_generated_pictures_are_seeded_pngs() -> None:
    assert picture(3) == picture(3) != picture(4)
    assert picture(3)[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_tiny_run_measures_both_batches_and_prints_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    # When the bench runs with batches of 2 and 5 pictures
    status = main(["--small", "2", "--large", "5"])
    out = capsys.readouterr().out
    # Then it measured both jobs (their zips were checked) and printed the ratio and verdict
    assert status == 0, out
    assert [int(m.group(1)) for m in RESULT.finditer(out)] == [2, 5], out
    assert all(float(m.group(2)) > 0 for m in RESULT.finditer(out))
    assert VERDICT.search(out), out


def test_bad_batch_sizes_are_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--small", "5", "--large", "5"])
    assert exited.value.code == 2
