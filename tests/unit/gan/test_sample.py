"""Sampling a trained generator: a PNG grid plus the raw images as .npy, reproducible per seed."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from shared.jobs.gan_train import GanTrainParams
from workers.gan.data import load_builtin, load_points
from workers.gan.loop import train
from workers.gan.sample import GRID_MAX_IMAGES, sample
from workers.hooks import InMemoryHooks

SIZE = 16
CHANNELS = 3
CELL = SIZE + 2  # grid padding is 2 px
SEED = 11


class _NotWeights:
    """An arbitrary object: weights_only loading must refuse to unpickle it."""


@pytest.fixture(scope="module")
def trained() -> InMemoryHooks:
    params = GanTrainParams(
        dataset="digits", image_size=SIZE, channels=CHANNELS, steps=3, batch_size=16, nz=8, ngf=8, ndf=8, seed=SEED
    )
    hooks = InMemoryHooks()
    train(params, load_builtin("digits", image_size=SIZE, channels=CHANNELS), hooks)
    return hooks


@pytest.fixture(scope="module")
def generator_pt(trained: InMemoryHooks) -> bytes:
    return trained.artifacts["generator.pt"][0]


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def test_sample_returns_a_grid_and_raw_images(generator_pt: bytes) -> None:
    png, npy = sample(generator_pt, n=10, seed=1)
    images = np.load(io.BytesIO(npy))
    assert images.shape == (10, CHANNELS, SIZE, SIZE)
    assert images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert _png_size(png) == (4 * CELL + 2, 3 * CELL + 2)  # 10 images, 4 per row


def test_sample_is_deterministic_per_seed(generator_pt: bytes) -> None:
    first, again, other = (sample(generator_pt, n=6, seed=seed) for seed in (1, 1, 2))
    assert first == again
    assert not np.array_equal(np.load(io.BytesIO(first[1])), np.load(io.BytesIO(other[1])))


def test_sampling_with_the_training_seed_reproduces_the_final_grid(trained: InMemoryHooks, generator_pt: bytes) -> None:
    png, _ = sample(generator_pt, n=64, seed=SEED)
    assert png == trained.artifacts["samples/final.png"][0]


def test_large_requests_cap_the_grid_but_not_the_array(generator_pt: bytes) -> None:
    n = GRID_MAX_IMAGES + 44
    png, npy = sample(generator_pt, n=n, seed=0)
    side = int(GRID_MAX_IMAGES**0.5)
    assert _png_size(png) == (side * CELL + 2, side * CELL + 2)
    assert np.load(io.BytesIO(npy)).shape == (n, CHANNELS, SIZE, SIZE)


def test_n_must_be_positive(generator_pt: bytes) -> None:
    with pytest.raises(ValueError, match="n must be at least 1"):
        sample(generator_pt, n=0, seed=0)


def test_files_that_are_not_a_generator_are_refused() -> None:
    pickled_object = io.BytesIO()
    torch.save({"arch": _NotWeights(), "state_dict": {}}, pickled_object)
    missing_arch = io.BytesIO()
    torch.save({"state_dict": {}}, missing_arch)
    for data in (b"garbage", pickled_object.getvalue(), missing_arch.getvalue()):
        with pytest.raises(ValueError, match=r"not a usable generator\.pt file"):
            sample(data, n=1, seed=0)


def test_a_dense_generator_without_batch_norm_samples_as_it_was_trained() -> None:
    # Given a point run whose dense G has no batch norm
    params = GanTrainParams(dataset="ring8", g_batchnorm=False, steps=3, batch_size=16, nz=2, ngf=8, ndf=8, seed=SEED)
    hooks = InMemoryHooks()
    train(params, load_points("ring8"), hooks)
    # When gan.sample rebuilds it from generator.pt
    _, raw = sample(hooks.artifacts["generator.pt"][0], n=5, seed=3)
    # Then it rebuilds the same net (a net with batch norm would not load these weights) and draws 2-D points
    points = np.load(io.BytesIO(raw))
    assert points.shape == (5, 2)
    assert np.isfinite(points).all()
