"""Class coverage: which classes a GAN's samples fall in, judged by a classifier of the dataset's classes.

A generator can reach a good Fréchet distance and still drop classes: a user with ten kinds of
pictures wants all ten back. So for every labelled dataset (digits, torchvision sets, uploads
with class folders, shapes) a classifier labels each evaluation's samples (the same EVAL_IMAGES
fresh samples FD is computed on), and the run records:

- ``class_kl``: KL(sample class histogram || reference histogram), in nats, summed over the
  classes the samples fall in. The reference is the data's own class histogram (for conditional
  runs the classes the evaluation asked for, in turn). 0 when the samples spread over the classes
  as the data does; a generator that drops one class of ten and spreads evenly over the other
  nine scores log(10/9) = 0.105, one that puts everything in one class log(10) = 2.3.
- ``class_confidence``: the classifier's mean top-class probability on the samples. Real digits
  score above 0.9 by the digits classifier; blurred or in-between samples lower.

A class whose share of the samples falls under DROP_SHARE of its reference share is named in a
"possible class dropping" warning (once a run is far enough along, as for mode collapse).

The classifier: for ``digits``, the digits feature classifier (workers/gan/features.py), whose head
knows the ten digits. For any other labelled set, a classifier of the same shape with the set's
channels and classes, trained once per (dataset, image size, channels) on the set itself (seeded,
80/20 split, seconds on a CPU) and stored beside the set: built-ins and torchvision sets under
``assets/classifiers/``, an upload under its prepared prefix, so deleting the upload removes it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import torch

from workers.gan.data import load_versioned
from workers.gan.features import DigitsClassifier, TrainedClassifier, to_feature_input, train_classifier

CLASS_KL_METRIC: Final = "class_kl"
CLASS_CONFIDENCE_METRIC: Final = "class_confidence"
DROP_SHARE: Final = 1 / 3  # a class under a third of its share of the samples is "possibly dropped"
MIN_CLASSES: Final = 2  # fewer: nothing to cover
SET_CLASSIFIER_VERSION: Final = 1
SET_CLASSIFIER_MIN_UPDATES: Final = 600  # small sets train more epochs: at least this many batches
SET_CLASSIFIER_MAX_EPOCHS: Final = 100
CLASS_DROP_WARNING: Final = (
    "possible class dropping at step {step}: {detail} of {samples} samples, under a third of their share in the "
    "data (class_kl {kl:.3f}). Try the stable preset, minibatch_std, mode_seeking or a longer run"
)


@dataclass(frozen=True)
class ClassCoverage:
    """One evaluation's class histogram against the reference."""

    kl: float
    confidence: float
    shares: tuple[float, ...]  # of the samples, per class
    reference: tuple[float, ...]  # of the data (or the classes asked for), per class
    low: tuple[str, ...]  # classes under DROP_SHARE of their reference share
    samples: int

    def metrics(self) -> dict[str, float]:
        """The job metrics of this evaluation."""
        return {CLASS_KL_METRIC: self.kl, CLASS_CONFIDENCE_METRIC: self.confidence}

    def detail(self, names: Sequence[str]) -> str:
        """The low classes with their shares, for the warning: ``class "7" 2.1 % (data 10.1 %)``."""
        index = {name: i for i, name in enumerate(names)}
        parts = [
            f'class "{name}" {100 * self.shares[index[name]]:.1f} % (data {100 * self.reference[index[name]]:.1f} %)'
            for name in self.low
        ]
        return ", ".join(parts)


def class_kl(shares: torch.Tensor, reference: torch.Tensor) -> float:
    """KL(shares || reference) in nats over the classes with samples; ``reference`` must be positive there."""
    present = shares > 0
    if bool((reference[present] <= 0).any()):
        raise ValueError("a class with samples has no share in the reference")
    p, q = shares[present].double(), reference[present].double()
    return max(0.0, float((p * (p / q).log()).sum()))


def coverage_of(probabilities: torch.Tensor, reference: torch.Tensor, names: Sequence[str]) -> ClassCoverage:
    """Class coverage of samples whose class probabilities are ``probabilities`` (N, K)."""
    if probabilities.ndim != 2 or not probabilities.shape[1] == reference.numel() == len(names):
        raise ValueError(f"probabilities {tuple(probabilities.shape)} do not match {len(names)} classes")
    count = probabilities.shape[0]
    top, label = probabilities.max(dim=1)
    shares = torch.bincount(label, minlength=len(names)).double() / max(count, 1)
    reference = reference.double() / reference.sum()
    low = tuple(name for name, got, want in zip(names, shares, reference, strict=True) if got < DROP_SHARE * want)
    return ClassCoverage(
        kl=class_kl(shares, reference),
        confidence=float(top.double().mean()) if count else 0.0,
        shares=tuple(float(s) for s in shares),
        reference=tuple(float(r) for r in reference),
        low=low,
        samples=count,
    )


class ClassJudge:
    """Labels generated images with a classifier and scores their class coverage against a reference."""

    def __init__(self, trained: TrainedClassifier, channels: int, names: Sequence[str], reference: torch.Tensor):
        if len(names) < MIN_CLASSES or reference.numel() != len(names):
            raise ValueError(f"class coverage needs {MIN_CLASSES} or more classes with a reference share each")
        self.model = trained.model.eval()
        self.channels = channels
        self.names = tuple(names)
        self.reference = reference.double()

    def __call__(self, images: torch.Tensor) -> ClassCoverage:
        """Class coverage of ``images`` (N, C, H, W) in [-1, 1]."""
        net = self.model.to(images.device)
        with torch.no_grad():
            probabilities = torch.cat(
                [net(to_classifier_input(chunk, self.channels)).softmax(dim=1) for chunk in images.split(500)]
            )
        return coverage_of(probabilities.cpu(), self.reference, self.names)


def to_classifier_input(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Images as a classifier of ``channels`` input channels takes them: 32 x 32, gray or colour."""
    if channels == 1:
        return to_feature_input(images)
    colour = images.float() if images.shape[1] == channels else images.float().expand(-1, channels, -1, -1)
    return to_feature_input(colour, keep_channels=True)


def reference_shares(labels: torch.Tensor, classes: int, *, conditional: bool) -> torch.Tensor:
    """What a run's samples should spread like: the data's class histogram, or uniform for conditional runs
    (whose evaluation asks for each class in turn)."""
    if conditional:
        return torch.full((classes,), 1.0 / classes, dtype=torch.float64)
    counts = torch.bincount(labels.cpu(), minlength=classes).double()
    return counts / counts.sum()


def train_set_classifier(
    images: torch.Tensor, labels: torch.Tensor, classes: int, *, channels: int, seed: int = 0
) -> TrainedClassifier:
    """A classifier of the digits classifier's shape for a labelled set (N, C, H, W) in [-1, 1]."""
    batches = math.ceil(images.shape[0] * 0.8 / 64)
    epochs = min(SET_CLASSIFIER_MAX_EPOCHS, max(6, math.ceil(SET_CLASSIFIER_MIN_UPDATES / max(batches, 1))))
    return train_classifier(
        to_classifier_input(images.cpu(), channels), labels.cpu(), classes, channels=channels, seed=seed, epochs=epochs
    )


def set_classifier_bytes(trained: TrainedClassifier, *, channels: int, names: Sequence[str]) -> bytes:
    """A set classifier as a weights_only-loadable file, with its channels and class names."""
    buffer = io.BytesIO()
    payload = {
        "version": SET_CLASSIFIER_VERSION,
        "channels": channels,
        "classes": list(names),
        "state_dict": trained.model.state_dict(),
        "held_out_accuracy": trained.held_out_accuracy,
    }
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_set_classifier(data: bytes, *, channels: int, names: Sequence[str]) -> TrainedClassifier:
    """A stored set classifier for these channels and classes; ValueError if it is not one."""
    what = "not a usable set classifier"
    payload = load_versioned(data, version=SET_CLASSIFIER_VERSION, what=what)
    if payload.get("channels") != channels or list(payload.get("classes", [])) != list(names):
        raise ValueError(f"{what}: it was trained for other channels or classes")
    try:
        model = DigitsClassifier(channels=channels, classes=len(names))
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise ValueError(f"{what}: {exc}") from exc
    return TrainedClassifier(model.eval().requires_grad_(False), float(payload["held_out_accuracy"]))
