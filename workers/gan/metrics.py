"""Sample-quality metrics: mode coverage on 2-D mixtures, and sample diversity for collapse warnings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workers.gan.data import Mixture

EVAL_SAMPLES = 2500  # the VEEGAN/PacGAN protocol draws 2,500 samples
HQ_SIGMAS = 3.0  # a sample is high quality within 3 standard deviations of a mode
MIN_PAIR = 2


@dataclass(frozen=True)
class ModeCoverage:
    """How many modes have at least one high-quality sample, and the share of high-quality samples."""

    modes: int
    total_modes: int
    hq_share: float


def mode_coverage(samples: torch.Tensor, mix: Mixture) -> ModeCoverage:
    """Score (N, 2) samples against a mixture: a mode is captured when a sample lies within 3 std of it."""
    if samples.ndim != 2 or samples.shape[1] != mix.centers.shape[1]:
        raise ValueError(f"samples must have shape (N, {mix.centers.shape[1]}), got {tuple(samples.shape)}")
    distance, nearest = torch.cdist(samples.float(), mix.centers.to(samples.device)).min(dim=1)
    good = distance <= HQ_SIGMAS * mix.std  # NaN samples are never good
    captured = int(torch.unique(nearest[good]).numel())
    share = float(good.float().mean()) if samples.shape[0] else 0.0
    return ModeCoverage(modes=captured, total_modes=int(mix.centers.shape[0]), hq_share=share)


def diversity(samples: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between samples (flattened); 0 for a fully collapsed set."""
    flat = samples.reshape(samples.shape[0], -1).float()
    count = flat.shape[0]
    if count < MIN_PAIR:
        return 0.0
    return float(torch.pdist(flat).mean())
