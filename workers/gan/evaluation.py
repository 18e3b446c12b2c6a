"""What a GAN run shows and measures: sample pictures, and evaluation at its ticks.

Image runs are scored by fd, kid, precision and recall (workers/gan/features.py), point runs by
mode coverage; evaluation draws from its own seeded stream, so it never changes a run's weights.
"""

from __future__ import annotations

import torch

from shared.jobs.gan_train import GanTrainParams
from workers.gan.coverage import CLASS_DROP_WARNING
from workers.gan.data import mixture
from workers.gan.features import ImageEvaluator
from workers.gan.health import COLLAPSE_MODES, COLLAPSE_WARNING, Monitor, may_warn
from workers.gan.metrics import EVAL_SAMPLES, mode_coverage
from workers.gan.sample import grid_png, latents, scatter_png
from workers.gan.state import STREAM_EVAL, GanGenerator, stream_seed
from workers.hooks import TrainHooks

EVAL_IMAGES = 1000  # generated images per image-quality evaluation (fd, kid, precision, recall)
EVAL_CHUNK = 250
DIVERSITY_METRIC = "diversity"  # at sample ticks: spread of the fixed-noise samples / spread of as many real ones
MODES_METRIC = "modes"
HQ_METRIC = "hq_share"


def generate(net: GanGenerator, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Samples in eval mode; consumes no random state and leaves BN statistics alone."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(z, labels)
    finally:
        net.train(was_training)


def sample_picture(params: GanTrainParams, samples: torch.Tensor, nrow: int | None = None) -> bytes:
    """A PNG of fixed-noise samples: an image grid (``nrow`` per row), or a scatter plot over the modes for points."""
    if params.points:
        return scatter_png(samples, centers=mixture(params.dataset).centers)
    return grid_png(samples, nrow=nrow)


def evaluate_images(
    params: GanTrainParams,
    sampler: GanGenerator,
    evaluator: ImageEvaluator,
    hooks: TrainHooks,
    step: int,
    classes: int,
    monitor: Monitor,
) -> None:
    """FD, KID, precision and recall of EVAL_IMAGES fresh samples (own seeded stream), classes in turn; for a
    labelled dataset their class coverage, with a warning once when a class gets under a third of its share."""
    seed = stream_seed(params.seed, STREAM_EVAL, step) % 2**63
    z = latents(EVAL_IMAGES, params.nz, seed=seed)
    device = next(sampler.parameters()).device
    wanted = torch.arange(EVAL_IMAGES) % classes if classes else None
    parts = []
    for start in range(0, EVAL_IMAGES, EVAL_CHUNK):
        chunk_labels = None if wanted is None else wanted[start : start + EVAL_CHUNK].to(device)
        parts.append(generate(sampler, z[start : start + EVAL_CHUNK].to(device), chunk_labels))
    metrics, coverage = evaluator.evaluate(torch.cat(parts), seed=seed)
    hooks.report_metrics(step, metrics)
    if coverage is not None and coverage.low and evaluator.judge is not None and may_warn(params, step):
        detail = coverage.detail(evaluator.judge.names)
        message = CLASS_DROP_WARNING.format(step=step, detail=detail, samples=coverage.samples, kl=coverage.kl)
        monitor.warn_once(hooks, "class_dropping", message)


def evaluate_points(
    params: GanTrainParams, sampler: GanGenerator, monitor: Monitor, hooks: TrainHooks, step: int
) -> None:
    """Mode coverage of 2,500 fresh samples (own seeded stream): the modes and hq_share metrics."""
    z = latents(EVAL_SAMPLES, params.nz, seed=stream_seed(params.seed, STREAM_EVAL, step) % 2**63)
    device = next(sampler.parameters()).device
    coverage = mode_coverage(generate(sampler, z.to(device)).cpu(), mixture(params.dataset))
    hooks.report_metrics(step, {MODES_METRIC: float(coverage.modes), HQ_METRIC: coverage.hq_share})
    if coverage.modes < COLLAPSE_MODES * coverage.total_modes and may_warn(params, step):
        detail = f"{coverage.modes} of {coverage.total_modes} modes have samples"
        monitor.warn_once(hooks, "collapse", COLLAPSE_WARNING.format(step=step, detail=detail))
