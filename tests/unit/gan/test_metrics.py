"""Quality metrics: mode coverage on the 2-D mixtures (the VEEGAN/PacGAN protocol) and sample diversity."""

from __future__ import annotations

import math

import torch

from workers.gan.data import GRID_STD, RING_RADIUS, RING_STD, load_points, mixture
from workers.gan.metrics import EVAL_SAMPLES, HQ_SIGMAS, diversity, mode_coverage


def test_the_mixtures_follow_the_protocol() -> None:
    ring, grid = mixture("ring8"), mixture("grid25")
    assert ring.centers.shape == (8, 2) and ring.std == RING_STD
    assert torch.allclose(ring.centers.norm(dim=1), torch.full((8,), RING_RADIUS))
    assert grid.centers.shape == (25, 2) and grid.std == GRID_STD
    assert sorted(set(grid.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    points = load_points("ring8")
    assert points.shape == (100_000, 2) and load_points("ring8") is points


def test_real_data_scores_all_modes_and_about_99_percent_hq() -> None:
    # Within 3 sigma of a 2-D Gaussian: 1 - exp(-9/2) = 98.9%
    for name in ("ring8", "grid25"):
        score = mode_coverage(load_points(name)[:EVAL_SAMPLES], mixture(name))
        assert score.modes == score.total_modes
        assert math.isclose(score.hq_share, 1 - math.exp(-(HQ_SIGMAS**2) / 2), abs_tol=0.01)


def test_a_collapsed_or_wandering_generator_scores_low() -> None:
    mix = mixture("ring8")
    one_mode = mix.centers[3].repeat(EVAL_SAMPLES, 1)
    assert (mode_coverage(one_mode, mix).modes, mode_coverage(one_mode, mix).hq_share) == (1, 1.0)
    between = (mix.centers[:4] + mix.centers[1:5]) / 2  # midway between neighbours: near no mode
    assert (mode_coverage(between, mix).modes, mode_coverage(between, mix).hq_share) == (0, 0.0)
    nan = torch.full((10, 2), float("nan"))
    assert mode_coverage(nan, mix).hq_share == 0.0


def test_diversity_is_zero_for_identical_samples() -> None:
    assert diversity(torch.ones(10, 3, 4, 4)) == 0.0
    assert math.isclose(diversity(torch.tensor([[0.0, 0.0], [3.0, 4.0]])), 5.0)
