"""GAN quality on ring8 (VEEGAN/PacGAN protocol): what the stable preset reaches at a short CPU budget.

Slow (marked ``slow``; deselect with ``-m 'not slow'``): 3 training runs of 4,000 steps of the
stable preset's dense GAN on ring8 (latent 2, G 128-256-512 without batch norm, a PacGAN D
256-128 judging pairs), about 30 s each on one shared core. ``make bench-quality`` runs the longer 5-seed table beside the lesson's
settings and the papers (docs/benchmarks.md, "GAN quality"); on CPU the runs are deterministic,
so ``make bench-quality ARGS="--steps 4000 --seeds 3 --presets stable --datasets ring8"`` prints
this test's figures.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from bench.gan_quality import run

pytestmark = pytest.mark.slow

SEEDS = range(3)  # the bench's seeds 0-2
STEPS = 4000
BATCH = 128
MIN_MODES = 7.5  # the ring8 target, on average over the seeds
# Measured 0.788, 0.781, 0.808 at this budget (mean 0.792); the 90% takes the bench's
# 16,000 steps (92.6% over 5 seeds: docs/benchmarks.md), too long for the suite.
MIN_HQ = 0.75


def _scores(dataset: str, preset: str) -> tuple[list[int], list[float]]:
    """(modes captured, high-quality share) per seed, from the job metrics of the last step: the bench's runs."""
    results = [
        run(dataset=dataset, preset=preset, seed=seed, steps=STEPS, batch_size=BATCH, width=None) for seed in SEEDS
    ]
    return [m for m, _ in results], [h for _, h in results]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    assert torch.get_num_threads() == 1  # the unit conftest's setting: these timings assume it


def test_stable_captures_the_ring8_modes_with_most_samples_on_them() -> None:
    # Given the stable preset's dense GAN trained for a short CPU budget on three seeds
    modes, shares = _scores("ring8", "stable")
    # Then it captures the 7.5 of 8 modes on average, and most samples lie within 3 std of one
    # (the lesson's settings put under 2% of their samples there: docs/benchmarks.md)
    assert statistics.fmean(modes) >= MIN_MODES, modes
    assert statistics.fmean(shares) >= MIN_HQ, shares
