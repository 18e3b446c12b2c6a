"""bench/scale.py in a tiny configuration, so the simulation can't rot, with losses and preemptions frequent
enough to happen: every job must end, and the work redone must stay under a checkpoint interval per loss.
Given / When / Then."""

from __future__ import annotations

import re

import pytest

from bench.scale import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SCALE = re.compile(
    r"^  utilisation ([\d.]+) .*; jobs lost (\d+); losses (\d+), preemptions (\d+); work redone ([\d.]+) s "
    r"\(bound: one checkpoint interval per loss, ([\d.]+) s\)$",
    re.M,
)


def test_a_tiny_cluster_with_frequent_losses_loses_no_job(capsys: pytest.CaptureFixture[str]) -> None:
    # When 3 and then 6 workers run 8 jobs each, losing a worker 2 times an hour and preempting one 4 times
    argv = ["--scales", "3,6", "--jobs-per-worker", "8", "--tenants", "4", "--loss-per-h", "2", "--preempt-per-h", "4"]
    status = main(argv)
    out = capsys.readouterr().out
    # Then both scales ran every job to its end, losses and preemptions happened, and redone work kept its bound
    assert status == 0, out
    scales = [m.groups() for m in SCALE.finditer(out)]
    assert len(scales) == 2, out
    for utilisation, lost, _losses, _preemptions, redone, bound in scales:
        assert 0.0 < float(utilisation) <= 1.0
        assert int(lost) == 0
        assert float(redone) <= float(bound)
    assert sum(int(s[2]) + int(s[3]) for s in scales) > 0, "no loss or preemption happened: the test proves nothing"
    assert re.search(r"^RESULT policy cost by workers: 3: p50 [\d.]+ ms \(1.00x\)", out, re.M), out
