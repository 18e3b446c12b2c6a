"""Image-quality metrics in the feature space of a small classifier trained on sklearn's digits.

The Inception network behind FID cannot be downloaded here, and would say little about 32 px
digits anyway, so Atelier trains its own small CNN on sklearn's digits once (seeded, a few
seconds on a CPU), stores it, and reuses it: ``DigitsClassifier`` below. Its 128-wide
penultimate layer is the feature space. Every image is judged there after conversion to gray
and resizing to 32 x 32.

- Fréchet distance (FID's formula): ||mu_r - mu_f||^2 + Tr(C_r + C_f - 2 (C_r C_f)^1/2).
- KID (Bińkowski et al. 2018): the unbiased MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, averaged over KID_SUBSETS random subsets.
- Precision and recall (Kynkäänniemi et al. 2019) with k = 3: a fake sample is "precise" when it
  lies inside some real sample's ball (radius: distance to its 3rd nearest real neighbour);
  recall is the same with the roles swapped.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from workers.gan.data import load_builtin_labelled, load_versioned

if TYPE_CHECKING:
    from workers.gan.coverage import ClassCoverage, ClassJudge

CLASSIFIER_VERSION: Final = 1
CLASSIFIER_KEY: Final = f"assets/digits-classifier-v{CLASSIFIER_VERSION}.pt"  # where executors store it
FEATURE_SIZE: Final = 32
FEATURE_DIM: Final = 128
DIGIT_CLASSES: Final = 10
TRAIN_SEED: Final = 0
TRAIN_EPOCHS: Final = 6
TRAIN_BATCH: Final = 64
TRAIN_LR: Final = 2e-3
HELD_OUT_SHARE: Final = 0.2
PR_K: Final = 3
MIN_EVAL_IMAGES: Final = 20  # real images an evaluation needs: covariances, k-NN radii, KID subsets
KID_SUBSETS: Final = 10
KID_SUBSET_SIZE: Final = 500
KID_DEGREE: Final = 3
FEATURE_BATCH: Final = 500
SQRTM_EPS: Final = 1e-6


class DigitsClassifier(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4 px) and a 128-wide feature layer before the logits.

    With other ``channels`` and ``classes`` it is a labelled set's classifier (workers/gan/coverage.py)."""

    def __init__(self, channels: int = 1, classes: int = DIGIT_CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, FEATURE_DIM), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURE_DIM, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, 128) of 32 x 32 gray images in [-1, 1]."""
        out: torch.Tensor = self.body(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, 10)."""
        out: torch.Tensor = self.head(self.features(x))
        return out


def to_feature_input(images: torch.Tensor, *, keep_channels: bool = False) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] as the classifier's input: gray (or their own channels), 32 x 32."""
    gray = images.float().mean(dim=1, keepdim=True) if images.shape[1] != 1 and not keep_channels else images.float()
    if gray.shape[-1] != FEATURE_SIZE or gray.shape[-2] != FEATURE_SIZE:
        gray = F.interpolate(gray, size=(FEATURE_SIZE, FEATURE_SIZE), mode="bilinear", align_corners=False)
    return gray


@dataclass(frozen=True)
class TrainedClassifier:
    """The classifier and its accuracy on held-out digits."""

    model: DigitsClassifier
    held_out_accuracy: float


def train_digits_classifier(seed: int = TRAIN_SEED, epochs: int = TRAIN_EPOCHS) -> TrainedClassifier:
    """Train the feature classifier on 80 % of sklearn's digits (seeded); score it on the rest."""
    digits = load_builtin_labelled("digits", image_size=FEATURE_SIZE, channels=1)
    return train_classifier(digits.images, digits.labels, DIGIT_CLASSES, channels=1, seed=seed, epochs=epochs)


def train_classifier(
    images: torch.Tensor, labels: torch.Tensor, classes: int, *, channels: int, seed: int, epochs: int
) -> TrainedClassifier:
    """Train a classifier on 80 % of ``images`` (N, channels, 32, 32) in [-1, 1] (seeded); score it on the rest."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images.shape[0], generator=generator)
    held = int(len(order) * HELD_OUT_SHARE)
    test_idx, train_idx = order[:held], order[held:]
    with torch.random.fork_rng(devices=[]):  # the layers' default init, seeded, leaving the global RNG alone
        torch.manual_seed(seed)
        model = DigitsClassifier(channels=channels, classes=classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    for _ in range(epochs):
        shuffled = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for batch in shuffled.split(TRAIN_BATCH):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images[test_idx]).argmax(dim=1) == labels[test_idx]).float().mean()) if held else 0.0
    return TrainedClassifier(model.requires_grad_(False), accuracy)


def classifier_bytes(trained: TrainedClassifier) -> bytes:
    """The classifier as a weights_only-loadable file."""
    buffer = io.BytesIO()
    payload = {
        "version": CLASSIFIER_VERSION,
        "state_dict": trained.model.state_dict(),
        "held_out_accuracy": trained.held_out_accuracy,
    }
    torch.save(payload, buffer)
    return buffer.getvalue()


def load_classifier(data: bytes) -> TrainedClassifier:
    """A stored classifier (torch.load with weights_only=True); ValueError if it is not one."""
    what = "not a usable digits classifier"
    payload = load_versioned(data, version=CLASSIFIER_VERSION, what=what)
    try:
        model = DigitsClassifier()
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:  # missing or misshapen weights
        raise ValueError(f"{what}: {exc}") from exc
    return TrainedClassifier(model.eval().requires_grad_(False), float(payload["held_out_accuracy"]))


class FeatureSpace:
    """Maps images to classifier features, on the device the images are on."""

    def __init__(self, classifier: DigitsClassifier) -> None:
        self.classifier = classifier.eval()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, 128) as float64 on the CPU."""
        device = images.device
        net = self.classifier.to(device)
        with torch.no_grad():
            parts = [net.features(to_feature_input(chunk)) for chunk in images.split(FEATURE_BATCH)]
        return torch.cat(parts).double().cpu()


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID's formula on two feature sets (N, D)."""
    mu_r, mu_f = real.mean(dim=0).numpy(), fake.mean(dim=0).numpy()
    cov_r, cov_f = np.cov(real.numpy(), rowvar=False), np.cov(fake.numpy(), rowvar=False)
    with warnings.catch_warnings():  # singular covariances (dead features) are handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_r @ cov_f)
        if not np.isfinite(root).all():  # as pytorch-fid: nudge both covariances off singular
            offset = np.eye(cov_r.shape[0]) * SQRTM_EPS
            root = scipy.linalg.sqrtm((cov_r + offset) @ (cov_f + offset))
    root = np.real(root)  # sqrtm leaves tiny imaginary parts from rounding
    value = float(((mu_r - mu_f) ** 2).sum() + np.trace(cov_r + cov_f - 2.0 * root))
    return max(value, 0.0)


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets."""
    size = min(KID_SUBSET_SIZE, real.shape[0], fake.shape[0])
    dim = real.shape[1]
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(KID_SUBSETS):
        x = real[torch.randperm(real.shape[0], generator=generator)[:size]]
        y = fake[torch.randperm(fake.shape[0], generator=generator)[:size]]
        k_xx = (x @ x.T / dim + 1) ** KID_DEGREE
        k_yy = (y @ y.T / dim + 1) ** KID_DEGREE
        k_xy = (x @ y.T / dim + 1) ** KID_DEGREE
        off = size * (size - 1)
        total += float(
            (k_xx.sum() - k_xx.diagonal().sum()) / off + (k_yy.sum() - k_yy.diagonal().sum()) / off - 2 * k_xy.mean()
        )
    return total / KID_SUBSETS


def _kth_radius(points: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest other point."""
    distances = torch.cdist(points, points)
    return distances.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k nearest neighbours."""
    real_radius, fake_radius = _kth_radius(real, k), _kth_radius(fake, k)
    cross = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = float((cross <= real_radius.unsqueeze(0)).any(dim=1).double().mean())
    recall = float((fake_radius.unsqueeze(0) >= cross.T).any(dim=1).double().mean())
    return precision, recall


class ImageEvaluator:
    """FD, KID and precision/recall of generated images against a fixed set of real ones; with a ``judge``
    (a labelled dataset's ClassJudge, workers/gan/coverage.py) their class coverage too."""

    def __init__(self, space: FeatureSpace, real_images: torch.Tensor, judge: ClassJudge | None = None) -> None:
        self.space = space
        self.real = space(real_images)
        self.judge = judge

    def __call__(self, fake_images: torch.Tensor, *, seed: int = 0) -> dict[str, float]:
        """The metrics of ``fake_images`` (N, C, H, W) in [-1, 1]."""
        return self.evaluate(fake_images, seed=seed)[0]

    def evaluate(self, fake_images: torch.Tensor, *, seed: int = 0) -> tuple[dict[str, float], ClassCoverage | None]:
        """The metrics of ``fake_images``, and their class coverage when the evaluator has a judge."""
        fake = self.space(fake_images)
        if not bool(torch.isfinite(fake).all()):
            return {"fd": float("inf"), "kid": float("inf"), "precision": 0.0, "recall": 0.0}, None
        precision, recall = precision_recall(self.real, fake)
        metrics = {
            "fd": frechet_distance(self.real, fake),
            "kid": kernel_inception_distance(self.real, fake, seed=seed),
            "precision": precision,
            "recall": recall,
        }
        coverage = self.judge(fake_images) if self.judge is not None else None
        return (metrics | coverage.metrics() if coverage is not None else metrics), coverage
