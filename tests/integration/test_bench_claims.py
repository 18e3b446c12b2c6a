"""bench/claims.py in a tiny configuration, so the benchmark can't rot: it seeds a fresh database, races
claimers through both claims, checks for double claims and prints its figures. Given / When / Then."""

from __future__ import annotations

import re

import pytest

from bench.claims import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SIDE = re.compile(r"^(reference|fair share) .*: (\d+) claims in [\d.]+ s = (\d+) claims/s; .* double claims 0$", re.M)
RESULT = re.compile(r"^RESULT claimers 4: fair \d+ claims/s .* ratio [\d.]+; double claims 0$", re.M)


def test_a_tiny_run_claims_on_both_sides_without_double_claims(capsys: pytest.CaptureFixture[str]) -> None:
    # When the bench runs 4 claimers for 60 claims over a small seeded backlog
    status = main(["--claimers", "4", "--claims", "60", "--queued", "300", "--history", "300", "--tenants", "10"])
    out = capsys.readouterr().out
    # Then both sides made their claims, none twice, and the summary line says so
    assert status == 0, out
    sides = {m.group(1): int(m.group(2)) for m in SIDE.finditer(out)}
    assert set(sides) == {"reference", "fair share"} and min(sides.values()) >= 60, out
    assert RESULT.search(out), out
    assert "workers running 60 s jobs" in out
