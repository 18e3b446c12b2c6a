"""The early-stopping rules as pure functions (shared/jobs/sweeps.py): where they tick, and whom they stop.
The standings are made by hand; the runtime's use of them is tested in tests/integration/test_early_stopping.py.
Given / When / Then."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.jobs.sweeps import EarlyStopping, Standing, SweepCreate, judge


def flat(value: float) -> Standing:
    """A trial that reported ``value`` at every step so far."""
    return Standing(best=value, mean=value, last=value)


MEDIAN = EarlyStopping(rule="median", min_steps=300, interval=100, min_trials=3)
ASHA = EarlyStopping(rule="asha", min_steps=100, reduction_factor=3, min_trials=2)


def test_median_ticks_every_interval_from_min_steps_and_asha_at_growing_rungs() -> None:
    assert MEDIAN.ticks(1000) == [300, 400, 500, 600, 700, 800, 900]
    assert EarlyStopping(min_steps=250).ticks(1000) == [250, 500, 750]  # interval defaults to min_steps
    assert ASHA.ticks(1000) == [100, 300, 900]
    assert ASHA.ticks(900) == [100, 300]  # the last step is never a tick: the trial has ended by then
    assert MEDIAN.ticks(300) == []


def test_median_stops_a_trial_whose_best_is_worse_than_the_others_median_running_mean() -> None:
    # Given three others whose running means at step 400 are 4, 5 and 6 (a max objective)
    others = [Standing(best=8, mean=4, last=8), Standing(best=8, mean=5, last=7), Standing(best=8, mean=6, last=8)]
    # When a trial whose best so far is 4.5 is judged, and one whose best is 5 (the median itself)
    behind = judge(MEDIAN, metric="modes", mode="max", step=400, own=Standing(4.5, 2, 3), others=others)
    level = judge(MEDIAN, metric="modes", mode="max", step=400, own=Standing(5, 2, 3), others=others)
    # Then the first is stopped with the numbers it lost by, and a tie goes on
    assert behind is not None and level is None
    assert (behind.rule, behind.step, behind.value, behind.threshold, behind.compared) == ("median", 400, 4.5, 5, 3)
    assert "best modes so far, 4.5, is below the median 5 of 3 other trials" in behind.message
    assert behind.as_json()["threshold"] == 5


def test_median_reads_a_min_objective_the_other_way() -> None:
    others = [flat(10.0), flat(12.0), flat(14.0)]
    assert judge(MEDIAN, metric="fd", mode="min", step=300, own=flat(11.9), others=others) is None
    stopped = judge(MEDIAN, metric="fd", mode="min", step=300, own=flat(12.5), others=others)
    assert stopped is not None and "is above the median 12" in stopped.message


@pytest.mark.parametrize(
    ("step", "count", "why"),
    [(200, 3, "before min_steps"), (300, 2, "fewer others than min_trials")],
)
def test_median_never_stops_early_in_the_run_or_on_too_few_others(step: int, count: int, why: str) -> None:
    others = [flat(8.0)] * count
    assert judge(MEDIAN, metric="modes", mode="max", step=step, own=flat(0.0), others=others) is None, why


def test_asha_keeps_the_best_third_of_a_rung_and_stops_the_rest() -> None:
    # Given five others at rung 100 (a min objective): with the trial itself, six, so the best 6 // 3 = 2 go on
    others = [flat(v) for v in (1.0, 2.0, 3.0, 4.0, 5.0)]
    # When trials with 1.5 (second best), 2.0 (ties the cutoff) and 2.5 (third) reach the rung
    second = judge(ASHA, metric="fd", mode="min", step=100, own=flat(1.5), others=others)
    tied = judge(ASHA, metric="fd", mode="min", step=100, own=flat(2.0), others=others)
    third = judge(ASHA, metric="fd", mode="min", step=100, own=flat(2.5), others=others)
    # Then the second best goes on, so does a tie with the cutoff, and the third is stopped
    assert second is None and tied is None
    assert third is not None
    assert (third.rule, third.threshold, third.compared) == ("asha", 2.0, 5)
    assert "not in the best 1/3 of the 6 trials that reached the rung (cutoff 2)" in third.message


def test_asha_reads_the_last_value_and_keeps_at_least_one() -> None:
    # A trial whose best was good but whose last value is the worst is judged on the last
    others = [flat(5.0), flat(6.0)]
    fell = judge(ASHA, metric="hq_share", mode="max", step=300, own=Standing(best=9.0, mean=5, last=1.0), others=others)
    assert fell is not None and fell.value == 1.0
    # With three at the rung and a factor of 3, exactly the best one goes on
    assert judge(ASHA, metric="hq_share", mode="max", step=300, own=flat(6.5), others=others) is None


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"rule": "asha", "min_steps": 10, "interval": 10}, "interval is for the median rule"),
        ({"min_steps": 0}, "greater than or equal to 1"),
        ({"min_steps": 10, "reduction_factor": 9}, "less than or equal to 8"),
        ({"min_steps": 10, "min_trials": 0}, "greater than or equal to 1"),
        ({"min_steps": 10, "patience": 3}, "Extra inputs are not permitted"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(spec: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        EarlyStopping.model_validate(spec)


def test_a_sweep_carries_its_rule_and_defaults_to_none() -> None:
    base = {"type": "gan.train", "grid": {"lr_g": [0.001]}, "objective": {"metric": "modes"}}
    assert SweepCreate.model_validate(base).early_stopping is None
    ruled = SweepCreate.model_validate({**base, "early_stopping": {"min_steps": 50}})
    assert ruled.early_stopping == EarlyStopping(rule="median", min_steps=50, min_trials=3)
