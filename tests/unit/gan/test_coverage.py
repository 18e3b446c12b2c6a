"""Class coverage (workers/gan/coverage.py): the KL and confidence by hand, the digits classifier on real
digits, a labelled set's own classifier, and the class-dropping warning through the loop's evaluation.

Each test reads Given / When / Then."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shared.jobs.gan_train import GanTrainParams
from workers.gan.coverage import (
    CLASS_CONFIDENCE_METRIC,
    CLASS_KL_METRIC,
    ClassJudge,
    class_kl,
    coverage_of,
    load_set_classifier,
    reference_shares,
    set_classifier_bytes,
    train_set_classifier,
)
from workers.gan.data import load_builtin_labelled
from workers.gan.evaluation import evaluate_images
from workers.gan.features import FeatureSpace, ImageEvaluator, TrainedClassifier, train_digits_classifier
from workers.gan.health import Monitor
from workers.gan.loop import train
from workers.hooks import InMemoryHooks

TEN = [str(d) for d in range(10)]
UNIFORM = torch.full((10,), 0.1, dtype=torch.float64)


@pytest.fixture(scope="module")
def trained() -> TrainedClassifier:
    return train_digits_classifier()


@pytest.fixture(scope="module")
def digits() -> object:
    return load_builtin_labelled("digits", image_size=32, channels=1)


def _one_hot(labels: list[int], classes: int = 10, confidence: float = 1.0) -> torch.Tensor:
    rest = (1.0 - confidence) / (classes - 1)
    probabilities = torch.full((len(labels), classes), rest, dtype=torch.float64)
    probabilities[torch.arange(len(labels)), torch.tensor(labels)] = confidence
    return probabilities


def test_the_kl_and_confidence_by_hand() -> None:
    # Given samples spread evenly over nine of ten classes, all in one, and as the data
    nine = coverage_of(_one_hot([i % 9 for i in range(900)]), UNIFORM, TEN)
    one = coverage_of(_one_hot([3] * 100, confidence=0.7), UNIFORM, TEN)
    even = coverage_of(_one_hot([i % 10 for i in range(1000)]), UNIFORM, TEN)
    # Then the KL from the data's histogram is log(10/9), log(10) and 0
    assert nine.kl == pytest.approx(math.log(10 / 9), rel=1e-9)
    assert one.kl == pytest.approx(math.log(10), rel=1e-9)
    assert even.kl == pytest.approx(0.0, abs=1e-12)
    # And the confidence is the mean top-class probability
    assert one.confidence == pytest.approx(0.7) and even.confidence == pytest.approx(1.0)
    # And a class under a third of its share is named: class 9 (none), all but 3 (none)
    assert nine.low == ("9",)
    assert one.low == tuple(name for name in TEN if name != "3")
    assert even.low == ()
    assert nine.metrics() == {CLASS_KL_METRIC: nine.kl, CLASS_CONFIDENCE_METRIC: nine.confidence}
    assert 'class "9" 0.0 % (data 10.0 %)' in nine.detail(TEN)


def test_the_reference_is_the_datas_histogram_unless_the_classes_are_asked_for() -> None:
    # Given labels with class 0 three times as common as class 1
    labels = torch.tensor([0, 0, 0, 1])
    # Then unconditional runs are judged against 3:1, conditional ones against the classes in turn
    assert reference_shares(labels, 2, conditional=False).tolist() == [0.75, 0.25]
    assert reference_shares(labels, 2, conditional=True).tolist() == [0.5, 0.5]
    # And samples at 3:1 then score 0 against the data, but not against uniform
    samples = _one_hot([0, 0, 0, 1] * 25, classes=2)
    assert coverage_of(samples, reference_shares(labels, 2, conditional=False), ["a", "b"]).kl == pytest.approx(0)
    assert coverage_of(samples, torch.tensor([0.5, 0.5]), ["a", "b"]).kl > 0.1
    # And a class with samples but no reference share is refused
    with pytest.raises(ValueError, match="no share in the reference"):
        class_kl(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))


def test_real_digits_cover_their_classes_by_the_digits_classifier(trained: TrainedClassifier, digits: object) -> None:
    # Given the digits classifier as a judge, the reference being the digits' own histogram
    labelled = digits
    reference = reference_shares(labelled.labels, 10, conditional=False)  # type: ignore[attr-defined]
    judge = ClassJudge(trained, 1, TEN, reference)
    # When it judges the real digits (as RGB too: it converts to gray)
    real = judge(labelled.images)  # type: ignore[attr-defined]
    rgb = judge(labelled.images.repeat(1, 3, 1, 1))  # type: ignore[attr-defined]
    # Then they cover every class almost exactly as the data does, with high confidence
    assert real.kl < 0.01 and real.low == ()
    assert real.confidence > 0.9
    assert rgb.kl == pytest.approx(real.kl, abs=1e-6)
    # And the zeros alone cover one class
    zeros = judge(labelled.images[labelled.labels == 0])  # type: ignore[attr-defined]
    assert zeros.kl > 2.0 and "0" not in zeros.low and len(zeros.low) == 9


def test_a_labelled_sets_own_classifier_learns_its_classes_and_survives_storage() -> None:
    # Given the built-in shapes in colour (circle, square, triangle)
    shapes = load_builtin_labelled("shapes", image_size=32, channels=3)
    # When a set classifier is trained on them
    trained = train_set_classifier(shapes.images, shapes.labels, len(shapes.classes), channels=3)
    # Then it tells the shapes apart on pictures it never saw, and judges the set as covering its classes
    assert trained.held_out_accuracy >= 0.9
    judge = ClassJudge(trained, 3, shapes.classes, reference_shares(shapes.labels, 3, conditional=False))
    assert judge(shapes.images).kl < 0.02
    # And it comes back from its bytes for the same channels and classes only
    data = set_classifier_bytes(trained, channels=3, names=shapes.classes)
    loaded = load_set_classifier(data, channels=3, names=shapes.classes)
    assert torch.equal(loaded.model(shapes.images[:8]), trained.model(shapes.images[:8]))
    with pytest.raises(ValueError, match="other channels or classes"):
        load_set_classifier(data, channels=1, names=shapes.classes)
    with pytest.raises(ValueError, match="other channels or classes"):
        load_set_classifier(data, channels=3, names=("circle", "square"))


class Repeats(nn.Module):
    """A collapsed generator: every latent gives the same picture."""

    def __init__(self, picture: torch.Tensor) -> None:
        super().__init__()
        self.picture = nn.Parameter(picture, requires_grad=False)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.picture.expand(z.shape[0], -1, -1, -1)


def test_a_generator_that_drops_classes_is_warned_about_once(trained: TrainedClassifier, digits: object) -> None:
    # Given an evaluator with the digits judge, and a generator that only ever draws one real "7"
    images, labels = digits.images, digits.labels  # type: ignore[attr-defined]
    judge = ClassJudge(trained, 1, TEN, reference_shares(labels, 10, conditional=False))
    evaluator = ImageEvaluator(FeatureSpace(trained.model), images[:500], judge)
    seven = Repeats(images[labels == 7][0])
    params = GanTrainParams(dataset="digits", image_size=32, steps=1000, nz=8)
    hooks, monitor = InMemoryHooks(), Monitor()
    # When its samples are evaluated early (step 100) and late enough to warn (steps 500 and 600)
    for step in (100, 500, 600):
        evaluate_images(params, seven, evaluator, hooks, step, 0, monitor)
    # Then every evaluation records the class KL (everything in one class: log(1 / its share)) and confidence
    share_of_sevens = float((labels == 7).double().mean())
    for step in (100, 500, 600):
        assert hooks.metrics[(CLASS_KL_METRIC, step)] == pytest.approx(-math.log(share_of_sevens), rel=1e-6)
        assert hooks.metrics[(CLASS_CONFIDENCE_METRIC, step)] > 0.9
    # And one warning names the dropped classes, from the first tick far enough along
    assert len(hooks.warnings) == 1
    warning = hooks.warnings[0]
    assert warning.startswith("possible class dropping at step 500: ") and 'class "0" 0.0 %' in warning
    assert 'class "7"' not in warning and "of 1000 samples" in warning


def test_a_training_run_records_class_coverage_at_its_evaluation_ticks(
    trained: TrainedClassifier, digits: object
) -> None:
    # Given a short digits run with the digits judge
    images, labels = digits.images, digits.labels  # type: ignore[attr-defined]
    judge = ClassJudge(trained, 1, TEN, reference_shares(labels, 10, conditional=False))
    params = GanTrainParams(
        dataset="digits", image_size=32, steps=10, batch_size=16, nz=8, ngf=8, ndf=8, seed=2, eval_every=5,
    )  # fmt: skip
    hooks = InMemoryHooks()
    train(params, images, hooks, evaluator=ImageEvaluator(FeatureSpace(trained.model), images[:300], judge))
    # Then class_kl and class_confidence sit beside fd at steps 5 and 10, finite and in range (at most
    # everything in the rarest class)
    most = -math.log(float(judge.reference.min()))
    for step in (5, 10):
        assert (("fd", step) in hooks.metrics) and 0.0 <= hooks.metrics[(CLASS_KL_METRIC, step)] <= most
        assert 0.1 <= hooks.metrics[(CLASS_CONFIDENCE_METRIC, step)] <= 1.0
