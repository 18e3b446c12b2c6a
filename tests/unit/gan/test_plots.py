"""The run's pictures: the loss-curve PNG (with its bounded, checkpointable history) and the
latent-interpolation strip. Each test reads Given / When / Then."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from workers.gan.nets import Generator
from workers.gan.plots import (
    COLOURS,
    HEIGHT,
    MAX_POINTS,
    WIDTH,
    LossHistory,
    interpolation_png,
    loss_curve_png,
    slerp,
)
from workers.gan.sample import GRID_PADDING


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_history_stays_bounded_and_evenly_thinned() -> None:
    # Given a history fed 10,000 logged steps
    history = LossHistory(("d_loss", "g_loss"))
    for step in range(1, 10_001):
        history.add(step, [1.0 / step, float(step)])
    # Then it holds at most MAX_POINTS of them, every stride-th step, in order, with their values
    assert len(history.steps) <= MAX_POINTS
    assert history.stride == 4  # 10,000 -> over 4,096 twice
    assert all(step % history.stride == 0 for step in history.steps)
    assert history.steps == sorted(history.steps) and history.steps[-1] == 10_000
    assert history.values[-1] == [1.0 / 10_000, 10_000.0]
    # And it survives a checkpoint round trip (weights_only-loadable tensors)
    buffer = io.BytesIO()
    torch.save(history.state(), buffer)
    restored = LossHistory.from_state(
        ("d_loss", "g_loss"), torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    )
    assert (restored.stride, restored.steps, restored.values) == (history.stride, history.steps, history.values)


def test_the_loss_curve_draws_each_series_in_its_colour() -> None:
    # Given d_loss falling and g_loss rising over 200 steps
    history = LossHistory(("d_loss", "g_loss"))
    for step in range(1, 201):
        history.add(step, [2.0 - step / 100, step / 100])
    # When it is drawn
    pixels = _pixels(loss_curve_png(history))
    # Then it is a chart of the expected size with both series' colours in it
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    for colour in COLOURS[:2]:
        assert (pixels == colour).all(axis=2).sum() > 200, colour
    # And d_loss (first colour) starts high on the left and ends low on the right
    d_rows, d_cols = np.nonzero((pixels == COLOURS[0]).all(axis=2))
    plot = d_cols > 100  # past the legend and the axis labels
    left, right = d_rows[plot & (d_cols < 200)].mean(), d_rows[plot & (d_cols > WIDTH - 100)].mean()
    assert left < right  # image rows grow downwards: high values are near the top


def test_slerp_walks_from_one_latent_to_the_other() -> None:
    a, b = torch.randn(3, 16), torch.randn(3, 16)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (3, 5, 16)
    torch.testing.assert_close(path[:, 0], a, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(path[:, -1], b, rtol=1e-4, atol=1e-4)


def test_the_interpolation_strip_is_rows_of_steps_images() -> None:
    # Given a small generator
    net = Generator(image_size=16, nz=8, ngf=8, channels=1)
    # When a 3 x 6 strip is drawn, twice with one seed and once with another
    png = interpolation_png(net, 8, seed=1, device=torch.device("cpu"), rows=3, steps=6)
    pixels = _pixels(png)
    # Then it is 3 rows of 6 images, seeded, and the walk changes the image along a row
    cell = 16 + GRID_PADDING
    assert pixels.shape[:2] == (3 * cell + GRID_PADDING, 6 * cell + GRID_PADDING)
    assert png == interpolation_png(net, 8, seed=1, device=torch.device("cpu"), rows=3, steps=6)
    assert png != interpolation_png(net, 8, seed=2, device=torch.device("cpu"), rows=3, steps=6)
    first = pixels[GRID_PADDING:cell, GRID_PADDING:cell]
    last = pixels[GRID_PADDING:cell, 5 * cell + GRID_PADDING : 6 * cell]
    assert np.abs(first.astype(int) - last.astype(int)).mean() > 1
