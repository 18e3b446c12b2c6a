"""Class-conditional DCGAN: the class reaches both nets, runs resume bit-identically, grids
and sampling lay the classes out, and unusable settings are refused. Each test reads
Given / When / Then."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from shared.jobs.gan_train import GanTrainParams
from tests.support.resume import stopped_and_resumed
from workers.gan.data import load_builtin_labelled
from workers.gan.loop import train
from workers.gan.nets import Discriminator, Generator
from workers.gan.sample import GRID_PADDING, sample
from workers.hooks import InMemoryHooks

SIZE = 16


@pytest.fixture(scope="module")
def shapes() -> Any:
    return load_builtin_labelled("shapes", image_size=SIZE, channels=3)


def _params(**overrides: Any) -> GanTrainParams:
    values: dict[str, Any] = {
        "dataset": "shapes",
        "conditional": True,
        "image_size": SIZE,
        "steps": 20,
        "batch_size": 16,
        "nz": 8,
        "ngf": 8,
        "ndf": 8,
        "seed": 2,
        "log_every": 1,
        "checkpoint_every": 10,
        "sample_every": 10,
    }
    return GanTrainParams(**(values | overrides))


def test_both_nets_see_the_class() -> None:
    generator = Generator(image_size=SIZE, nz=8, ngf=8, channels=3, num_classes=3).eval()
    critic = Discriminator(image_size=SIZE, ndf=8, channels=3, num_classes=3).eval()
    z = torch.randn(4, 8)
    with torch.no_grad():
        a = generator(z, torch.tensor([0, 0, 0, 0]))
        b = generator(z, torch.tensor([1, 1, 1, 1]))
        assert not torch.allclose(a, b)  # same latent, other class, other image
        assert not torch.allclose(critic(a, torch.tensor([0] * 4)), critic(a, torch.tensor([2] * 4)))
    with pytest.raises(ValueError, match="conditional on 3 classes: pass labels"):
        generator(z)


def test_a_conditional_run_resumes_bit_identically(shapes: Any) -> None:
    params = _params()
    kwargs = {"labels": shapes.labels, "num_classes": len(shapes.classes)}
    whole = InMemoryHooks()
    train(params, shapes.images, whole, **kwargs)
    cut = stopped_and_resumed(lambda hooks: train(params, shapes.images, hooks, **kwargs), stop_at=13)
    assert cut.artifacts["generator.pt"][0] == whole.artifacts["generator.pt"][0]
    assert cut.artifacts["samples/final.png"][0] == whole.artifacts["samples/final.png"][0]


def test_the_grid_has_one_row_per_class_and_sampling_one_column_per_class(shapes: Any) -> None:
    # Given a finished conditional run on the 3 shape classes
    hooks = InMemoryHooks()
    train(_params(), shapes.images, hooks, labels=shapes.labels, num_classes=3)
    # Then its grid is 3 rows of 64 // 3 = 21 images
    cell = SIZE + GRID_PADDING
    grid = np.asarray(Image.open(io.BytesIO(hooks.artifacts["samples/final.png"][0])))
    assert grid.shape[:2] == (3 * cell + GRID_PADDING, 21 * cell + GRID_PADDING)
    # And gan.sample of its generator draws the classes in turn, one class per grid column
    picture, raw = sample(hooks.artifacts["generator.pt"][0], n=9, seed=0)
    assert np.load(io.BytesIO(raw)).shape == (9, 3, SIZE, SIZE)
    assert np.asarray(Image.open(io.BytesIO(picture))).shape[:2] == (3 * cell + GRID_PADDING, 3 * cell + GRID_PADDING)


def test_conditional_training_needs_labels_that_fit(shapes: Any) -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        train(_params(), shapes.images, InMemoryHooks())
    with pytest.raises(ValueError, match=r"labels must lie in 0 \.\. 1"):
        train(_params(), shapes.images, InMemoryHooks(), labels=shapes.labels, num_classes=2)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"dataset": "ring8", "image_size": 64}, "class conditioning applies to labelled images"),
        ({"arch": "mlp"}, "class conditioning needs arch 'dcgan'"),
    ],
)
def test_conditional_settings_that_cannot_work_are_refused(overrides: dict[str, Any], needle: str) -> None:
    values = {"dataset": "shapes", "conditional": True} | overrides
    if values["dataset"] == "ring8":
        values.pop("image_size")
    with pytest.raises(ValueError, match=needle):
        GanTrainParams(**values)
