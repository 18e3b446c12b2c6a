"""GAN quality on the 2-D mixtures (VEEGAN/PacGAN protocol): the stable preset against the lesson's settings.

Slow (marked ``slow``; deselect with ``-m 'not slow'``): 6 training runs of 1,500 steps, about 3 to 6
minutes on one shared core. The width and budget match ``make bench-quality --width 16 --steps 1500``,
whose table in docs/benchmarks.md ("GAN quality") also records that the issue's absolute targets
are not met at this budget.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from shared.jobs.specs import GanTrainParams
from workers.gan.data import load_points
from workers.gan.loop import HQ_METRIC, MODES_METRIC, train
from workers.hooks import InMemoryHooks

pytestmark = pytest.mark.slow

SEEDS = range(3)  # the bench's seeds 0-2; 5 seeds would double the minutes
STEPS = 1500
BATCH = 128
WIDTH = 16  # ngf = ndf: G 64-128-256, D 128-64 (the lesson's 256-512-1024 / 512-256 at 64)
NEVER = 10**9
MODE_MARGIN = 1.0  # modes, on average over the seeds


def _scores(dataset: str, preset: str) -> tuple[float, float]:
    """Mean (modes captured, high-quality share) over the seeds, from the job metrics of the last step."""
    modes, shares = [], []
    for seed in SEEDS:
        params = GanTrainParams(
            dataset=dataset,
            preset=preset,
            seed=seed,
            steps=STEPS,
            batch_size=BATCH,
            ngf=WIDTH,
            ndf=WIDTH,
            log_every=NEVER,
            checkpoint_every=NEVER,
            sample_every=NEVER,
        )
        hooks = InMemoryHooks()
        train(params, load_points(dataset), hooks)
        modes.append(hooks.metrics[(MODES_METRIC, STEPS)])
        shares.append(hooks.metrics[(HQ_METRIC, STEPS)])
    return statistics.fmean(modes), statistics.fmean(shares)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    assert torch.get_num_threads() == 1  # the unit conftest's setting: these timings assume it


def test_stable_covers_more_of_ring8_than_the_lesson_settings() -> None:
    # Given the same dense GAN, seeds and step budget for both presets
    lesson_modes, lesson_hq = _scores("ring8", "lesson")
    stable_modes, stable_hq = _scores("ring8", "stable")
    # Then stable captures clearly more of the 8 modes, with at least as many high-quality samples
    # (the issue's >= 7.5 modes with >= 90% HQ is not reached at this budget: docs/benchmarks.md)
    assert stable_modes >= lesson_modes + MODE_MARGIN, (stable_modes, lesson_modes)
    assert stable_hq >= lesson_hq, (stable_hq, lesson_hq)
