"""Image-quality metrics in the digits classifier's feature space: the classifier itself, FD,
KID, precision/recall with k = 3, and their recording at evaluation ticks. Each test reads
Given / When / Then."""

from __future__ import annotations

import io

import pytest
import torch

from shared.jobs.gan_train import GanTrainParams
from tests.support.resume import stopped_and_resumed
from workers.gan.data import load_builtin
from workers.gan.features import (
    FEATURE_DIM,
    FeatureSpace,
    ImageEvaluator,
    TrainedClassifier,
    classifier_bytes,
    frechet_distance,
    kernel_inception_distance,
    load_classifier,
    precision_recall,
    train_digits_classifier,
)
from workers.gan.loop import train
from workers.hooks import InMemoryHooks

MIN_ACCURACY = 0.95
IMAGE_METRICS = {"fd", "kid", "precision", "recall"}


@pytest.fixture(scope="module")
def trained() -> TrainedClassifier:
    return train_digits_classifier()


@pytest.fixture(scope="module")
def digits32() -> torch.Tensor:
    return load_builtin("digits", image_size=32, channels=1)


def test_the_classifier_learns_digits_and_survives_storage(trained: TrainedClassifier) -> None:
    # The classifier is good at its own task on digits it never saw, and seeded
    assert trained.held_out_accuracy >= MIN_ACCURACY
    data = classifier_bytes(trained)
    assert data == classifier_bytes(train_digits_classifier())
    # And it comes back from its bytes (weights_only) unchanged; junk is refused
    loaded = load_classifier(data)
    assert loaded.held_out_accuracy == trained.held_out_accuracy
    for name, value in trained.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value)
    with pytest.raises(ValueError, match="not a usable digits classifier"):
        load_classifier(io.BytesIO().getvalue() + b"PK\x03\x04 not a torch file")


def test_fd_and_kid_are_zero_for_a_set_against_itself_and_grow_with_a_shift() -> None:
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(800, 16, generator=generator, dtype=torch.float64)
    other = torch.randn(800, 16, generator=generator, dtype=torch.float64)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    same, near, far = (frechet_distance(real, x) for x in (other, other + 0.5, other + 2.0))
    assert same < near < far
    assert far == pytest.approx(16 * 4.0, rel=0.1)  # ||mu shift||^2 = 16 * 2^2, same covariance
    kid_same, kid_far = kernel_inception_distance(real, other), kernel_inception_distance(real, other + 2.0)
    assert abs(kid_same) < 0.05 < kid_far


def test_precision_and_recall_separate_quality_from_coverage() -> None:
    generator = torch.Generator().manual_seed(1)
    real = torch.cat(
        [torch.randn(300, 2, generator=generator) + c for c in (torch.tensor([0.0, 0.0]), torch.tensor([8.0, 0.0]))]
    )
    # A generator covering both modes: high precision and high recall
    both = torch.cat(
        [torch.randn(300, 2, generator=generator) + c for c in (torch.tensor([0.0, 0.0]), torch.tensor([8.0, 0.0]))]
    )
    # One that collapsed onto one mode: still precise, but it recalls only half the data
    collapsed = torch.randn(600, 2, generator=generator)
    # One off in empty space: neither
    lost = torch.randn(600, 2, generator=generator) + torch.tensor([0.0, 30.0])
    p_both, r_both = precision_recall(real, both)
    p_col, r_col = precision_recall(real, collapsed)
    p_lost, r_lost = precision_recall(real, lost)
    assert p_both > 0.9 and r_both > 0.9
    assert p_col > 0.9 and 0.4 < r_col < 0.6
    assert p_lost == 0.0 and r_lost == 0.0


def test_real_digits_score_far_better_than_noise(trained: TrainedClassifier, digits32: torch.Tensor) -> None:
    # Given an evaluator holding 600 real digits
    evaluator = ImageEvaluator(FeatureSpace(trained.model), digits32[:600])
    # When it scores 600 other real digits, and 600 noise images
    real = evaluator(digits32[600:1200])
    noise = evaluator(torch.rand(600, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    # Then real digits are close and precise; noise is far and neither precise nor recalled
    assert set(real) == IMAGE_METRICS and FeatureSpace(trained.model)(digits32[:3]).shape == (3, FEATURE_DIM)
    assert real["fd"] * 20 < noise["fd"]
    assert real["kid"] < noise["kid"]
    assert real["precision"] > 0.6 and real["recall"] > 0.6  # k-NN balls from 600 samples: not 1
    assert noise["precision"] < 0.1 and noise["recall"] < 0.1


def test_the_loop_records_image_metrics_at_evaluation_ticks_and_resumes_exactly(
    trained: TrainedClassifier, digits32: torch.Tensor
) -> None:
    # Given a short digits run that evaluates every 5 steps
    params = GanTrainParams(
        dataset="digits", image_size=32, steps=12, batch_size=16, nz=8, ngf=8, ndf=8, seed=4, log_every=1,
        checkpoint_every=5, sample_every=6, eval_every=5,
    )  # fmt: skip
    evaluator = ImageEvaluator(FeatureSpace(trained.model), digits32[:500])
    whole = InMemoryHooks()
    train(params, digits32, whole, evaluator=evaluator)
    # Then fd, kid, precision and recall are recorded at steps 5, 10 and the last
    assert {step for name, step in whole.metrics if name in IMAGE_METRICS} == {5, 10, 12}
    assert {name for name, step in whole.metrics if step == 10} >= IMAGE_METRICS
    assert all(whole.metrics[("fd", s)] > 0 for s in (5, 10, 12))
    # And a run stopped at step 7 and resumed ends the same, metrics included (evaluation has its own stream)
    cut = stopped_and_resumed(lambda hooks: train(params, digits32, hooks, evaluator=evaluator), stop_at=7)
    assert cut.artifacts["generator.pt"][0] == whole.artifacts["generator.pt"][0]
    assert cut.metrics[("fd", 12)] == whole.metrics[("fd", 12)]
