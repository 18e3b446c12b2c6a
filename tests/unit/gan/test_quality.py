"""GAN quality on ring8 and grid25 (VEEGAN/PacGAN protocol), and on digits (FD and class coverage): what the
stable preset reaches at a short CPU budget.

Slow (marked ``slow``; deselect with ``-m 'not slow'``). ring8: 3 training runs of 4,000 steps of the
stable preset's dense GAN (latent 2, G 128-256-512 without batch norm, a PacGAN D 256-128 judging
pairs), about 30 s each on one shared core. grid25: one run of 16,000 steps (the same G and an
unpacked D), about 65 s. ``make bench-quality`` runs the longer 5-seed table
beside the lesson's settings and the papers (docs/benchmarks.md, "GAN quality"); on CPU the runs
are deterministic, so ``make bench-quality ARGS="--steps 4000 --seeds 3 --presets stable --datasets
ring8"`` prints the ring8 test's figures. digits: one run of 4,000 steps of the stable DCGAN (with R1), about
3 minutes; ``make bench-quality ARGS="--datasets digits --seeds 1 --first-seed 1 --presets stable"`` prints its
figures. An upload of five class folders: one run of 3,000 steps at 16 px, about a minute.
"""

from __future__ import annotations

import statistics

import pytest
import torch

from bench.gan_quality import run, run_digits
from shared.jobs.gan_train import GanTrainParams
from tests.support.class_folders import class_folders
from tests.unit.conftest import unit_torch_threads
from workers.gan.coverage import ClassCoverage, ClassJudge, reference_shares, train_set_classifier
from workers.gan.data import load_image_files
from workers.gan.features import FeatureSpace, ImageEvaluator, TrainedClassifier, train_digits_classifier
from workers.gan.loop import train
from workers.hooks import InMemoryHooks

pytestmark = pytest.mark.slow

SEEDS = range(3)  # the bench's seeds 0-2
STEPS = 4000
BATCH = 128
MIN_MODES = 7.5  # the ring8 target, on average over the seeds
# Measured 0.788, 0.781, 0.808 at this budget (mean 0.792); the 90% takes the bench's
# 16,000 steps (92.6% over 5 seeds: docs/benchmarks.md), too long for the suite.
MIN_HQ = 0.75
GRID_STEPS = 16000
GRID_MIN_MODES = 23  # the grid25 target
# Measured 25 modes and 0.810 on seed 0 at this budget (seeds 0-4: 24.4 modes, 66.0%, the lowest
# seed 47.7%); the 85% takes the bench's 48,000 steps (89.6% over 5 seeds:
# docs/benchmarks.md). The previous preset (BN in G, Adam 1e-3) put 54.0% on the modes on seed 0.
GRID_MIN_HQ = 0.60


def _scores(dataset: str, preset: str, *, steps: int = STEPS, seeds: range = SEEDS) -> tuple[list[int], list[float]]:
    """(modes captured, high-quality share) per seed, from the job metrics of the last step: the bench's runs."""
    results = [
        run(dataset=dataset, preset=preset, seed=seed, steps=steps, batch_size=BATCH, width=None) for seed in seeds
    ]
    return [m for m, _ in results], [h for _, h in results]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    assert torch.get_num_threads() == unit_torch_threads()  # the unit conftest's setting: the budgets assume 1


def test_stable_captures_the_ring8_modes_with_most_samples_on_them() -> None:
    # Given the stable preset's dense GAN trained for a short CPU budget on three seeds
    modes, shares = _scores("ring8", "stable")
    # Then it captures the 7.5 of 8 modes on average, and most samples lie within 3 std of one
    # (the lesson's settings put under 2% of their samples there: docs/benchmarks.md)
    assert statistics.fmean(modes) >= MIN_MODES, modes
    assert statistics.fmean(shares) >= MIN_HQ, shares


def test_stable_captures_the_grid25_modes_with_most_samples_on_them() -> None:
    # Given the stable preset's dense GAN trained on grid25 for 16,000 steps (one seed)
    modes, shares = _scores("grid25", "stable", steps=GRID_STEPS, seeds=range(1))
    # Then it captures the 23 of 25 modes, with most samples within 3 std of one
    assert modes[0] >= GRID_MIN_MODES, modes
    assert shares[0] >= GRID_MIN_HQ, shares


DIGITS_SEED = 1  # of the bench's seeds 0-2, the one where stable without R1 was worst
DIGITS_STEPS = 4000  # the FD table's budget: 32 px, ngf = ndf = 16, batch 64
# Measured on this seed at this budget (docs/benchmarks.md, "Class coverage on digits"): stable FD 36.4,
# class KL 0.019, confidence 0.89; the same preset without R1 FD 71.9 (0.025, 0.87); lesson FD 90.5
# (0.071, 0.87). The 3-seed targets are make bench-quality's; this one-seed bound is looser, and
# the preset before R1 fails it by 17.
DIGITS_MAX_FD = 55.0
DIGITS_MAX_CLASS_KL = 0.05
DIGITS_MIN_CONFIDENCE = 0.85


def test_stable_covers_the_digit_classes_with_a_low_fd() -> None:
    # Given the stable preset's DCGAN trained on digits at the FD table's budget, scored as a job scores it
    result = run_digits(
        preset="stable", seed=DIGITS_SEED, steps=DIGITS_STEPS, batch_size=64, width=16, classifier=_classifier()
    )
    # Then its samples fall in the ten classes as the digits do, confidently, at an FD far below lesson's
    assert result["class_kl"] <= DIGITS_MAX_CLASS_KL, result
    assert result["class_confidence"] >= DIGITS_MIN_CONFIDENCE, result
    assert result["fd"] <= DIGITS_MAX_FD, result


def _classifier() -> TrainedClassifier:
    return train_digits_classifier()


UPLOAD_STEPS = 3000
UPLOAD_SIZE = 16
# Measured on this machine (docs/benchmarks.md, "Class coverage on digits"): class shares disc 0.162, ring 0.145,
# square 0.333, stripes 0.173, triangle 0.187 at step 3,000 (class KL 0.051); at 1,000 steps stripes had 2.5 %
# and the run warned of class dropping. Half of a class's 20 % share is the bound.
UPLOAD_MIN_SHARE_OF_DATA = 0.5


class _Recording(ImageEvaluator):
    """An evaluator that keeps each evaluation's class coverage."""

    coverages: list[ClassCoverage]

    def evaluate(self, fake_images: torch.Tensor, *, seed: int = 0) -> tuple[dict[str, float], ClassCoverage | None]:
        metrics, coverage = super().evaluate(fake_images, seed=seed)
        if coverage is not None:
            self.coverages.append(coverage)
        return metrics, coverage


def test_stable_gives_back_every_class_of_an_uploaded_set_trained_without_labels() -> None:
    # Given an upload of five class folders of procedurally distinct pictures (discs, rings, squares, stripes,
    # triangles; 60 each), decoded as a job decodes it, and a classifier trained on the upload itself
    images, labels, classes = load_image_files(list(class_folders().items()), image_size=UPLOAD_SIZE, channels=3)
    judge_net = train_set_classifier(images, labels, len(classes), channels=3)
    judge = ClassJudge(judge_net, 3, classes, reference_shares(labels, len(classes), conditional=False))
    evaluator = _Recording(FeatureSpace(train_digits_classifier().model), images, judge)
    evaluator.coverages = []
    # When stable trains on it unconditionally
    params = GanTrainParams(
        dataset="00000000-0000-4000-8000-000000000001", preset="stable", image_size=UPLOAD_SIZE, channels=3,
        steps=UPLOAD_STEPS, ngf=16, ndf=16, seed=0, eval_every=1000, sample_every=UPLOAD_STEPS,
        checkpoint_every=UPLOAD_STEPS,
    )  # fmt: skip
    train(params, images, InMemoryHooks(), evaluator=evaluator)
    # Then by the upload's classifier every class gets at least half its share of the final samples
    final = evaluator.coverages[-1]
    assert judge_net.held_out_accuracy >= 0.85
    assert (
        min(got / want for got, want in zip(final.shares, final.reference, strict=True)) >= UPLOAD_MIN_SHARE_OF_DATA
    ), dict(zip(classes, final.shares, strict=True))
