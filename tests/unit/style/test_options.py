"""The style engine's options, shown with runs that could fail: style blend, colour
preservation, the content/style trade-off, multi-scale, init, presets, and L-BFGS resume.

Runs use random VGG weights, 64 px (256 px for the multi-scale run) and shallow layers to
stay fast on one CPU thread. Each test reads Given / When / Then."""

from __future__ import annotations

import io
import itertools
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2yuv
from skimage.metrics import structural_similarity

from shared.jobs.style_transfer import StyleTransferParams
from workers.hooks import STOP_SHUTDOWN, InMemoryHooks, StopRequested
from workers.style.images import load_builtin_image, to_tensor
from workers.style.losses import StyleLoss, gram_targets
from workers.style.transfer import (
    OUTPUT_ARTIFACT,
    SCALE_ARTIFACT,
    SNAPSHOT_ARTIFACT,
    TransferResult,
    run_transfer,
    transfer,
)
from workers.style.vgg import build_vgg

SIZE = 64
STEPS = 30
SHALLOW_STYLE = ["relu1_1", "relu2_1", "relu3_1"]
SHALLOW_CONTENT = ["relu3_1"]
BLEND = (0.7, 0.3)
TRADE_OFF_WEIGHTS = (1e2, 1e3, 1e4)
# Mean |U| / |V| difference to the content: colour preservation must stay under it; a plain
# transfer of the same pair lands well above it.
CHROMA_TOLERANCE = 0.01
CHROMA_MIN_PLAIN_SHIFT = 0.03
MIN_STYLE_DROP = 3.0  # measured: 5x in 30 L-BFGS steps
MULTI_SCALES = [64, 128, 256]
MULTI_STEPS = 3
SNAPSHOT_EVERY = 2
RESUME_SCALES = [32, 48]
RESUME_STEPS = 4
LBFGS_MAX_RISE = 2.0
LBFGS_MIN_DROP = 100.0


def _params(**overrides: Any) -> StyleTransferParams:
    """Small, fast params: random weights, shallow layers, L-BFGS; ``overrides`` on top."""
    fields: dict[str, Any] = {
        "content": "astronaut",
        "styles": ["coffee"],
        "size": SIZE,
        "steps": STEPS,
        "weights": "random",
        "content_layers": SHALLOW_CONTENT,
        "style_layers": SHALLOW_STYLE,
        "optimizer": "lbfgs",
    }
    return StyleTransferParams(**(fields | overrides))


def _run(params: StyleTransferParams, hooks: InMemoryHooks | None = None) -> TransferResult:
    styles = [load_builtin_image(name) for name in params.styles]
    return run_transfer(params, load_builtin_image(params.content), styles, hooks or InMemoryHooks())


def _style_distance(params: StyleTransferParams, image: torch.Tensor, style: str) -> float:
    """Unweighted Gram loss of ``image`` against one style picture, on the run's encoder and layers."""
    encoder = build_vgg(params.network, params.weights, seed=params.seed, layers=params.style_layers)
    with torch.no_grad():
        grams = gram_targets(encoder(to_tensor(load_builtin_image(style), params.size)), params.style_layers)
        return float(StyleLoss([grams], [1.0], params.style_layers, None, 1.0)(encoder(image)))


def _hwc(image: torch.Tensor) -> np.ndarray:
    return image[0].permute(1, 2, 0).numpy().astype(np.float64)


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        img.verify()
    return Image.open(io.BytesIO(data)).size


def test_a_07_03_blend_is_closer_to_the_heavier_style_and_swapping_the_weights_swaps_the_order() -> None:
    distances = {}
    for blend in (BLEND, BLEND[::-1]):
        # When coffee and rocket are blended with these weights
        params = _params(styles=["coffee", "rocket"], style_blend=list(blend))
        image = _run(params).image
        distances[blend] = (_style_distance(params, image, "coffee"), _style_distance(params, image, "rocket"))
    # Then the style loss against each target is ordered as the weights say
    coffee, rocket = distances[BLEND]
    assert coffee < rocket, distances
    coffee, rocket = distances[BLEND[::-1]]
    assert rocket < coffee, distances


def _mean_chroma_shift(image: torch.Tensor, content: torch.Tensor) -> np.ndarray:
    """Mean |U| and |V| differences (YUV as scikit-image defines it) between two images."""
    return np.abs(rgb2yuv(_hwc(image))[..., 1:] - rgb2yuv(_hwc(content))[..., 1:]).mean(axis=(0, 1))


def test_preserve_colors_keeps_the_contents_chroma_and_a_plain_transfer_does_not() -> None:
    # Given a colourful style (coffee) on the astronaut
    content = to_tensor(load_builtin_image("astronaut"), SIZE)
    # When both run, with and without colour preservation (style-dominated weights)
    hooks = InMemoryHooks()
    preserved = _run(_params(preserve_colors=True, style_weight=1e4), hooks).image
    plain = _run(_params(preserve_colors=False, style_weight=1e4)).image
    # Then only the preserved output keeps U and V within the tolerance of the content's
    assert (_mean_chroma_shift(preserved, content) < CHROMA_TOLERANCE).all(), _mean_chroma_shift(preserved, content)
    assert (_mean_chroma_shift(plain, content) > CHROMA_MIN_PLAIN_SHIFT).any(), _mean_chroma_shift(plain, content)
    # And the preserved one was still stylised: its (luminance) style loss fell severalfold
    style = hooks.series("style_loss")
    assert style[-1][1] < style[0][1] / MIN_STYLE_DROP, style


def test_raising_the_style_weight_lowers_ssim_to_the_content_and_the_style_loss() -> None:
    content = to_tensor(load_builtin_image("astronaut"), SIZE)
    ssims, style_losses = [], []
    for weight in TRADE_OFF_WEIGHTS:
        params = _params(style_weight=weight)
        image = _run(params).image
        ssims.append(structural_similarity(_hwc(image), _hwc(content), channel_axis=2, data_range=1.0))
        style_losses.append(_style_distance(params, image, "coffee"))
    # Then both fall strictly at every step up in style weight
    assert all(b < a for a, b in itertools.pairwise(ssims)), ssims
    assert all(b < a for a, b in itertools.pairwise(style_losses)), style_losses


def test_a_multi_scale_run_ends_at_256_px_with_every_scale_and_snapshot_as_an_artifact() -> None:
    # When a 64 -> 128 -> 256 px run takes 3 steps per scale and snapshots every 2 steps
    params = _params(
        size=MULTI_SCALES[-1],
        scales=MULTI_SCALES,
        steps=MULTI_STEPS,
        snapshot_every=SNAPSHOT_EVERY,
        content_layers=["relu2_1"],
        style_layers=["relu1_1", "relu2_1"],
    )
    hooks = InMemoryHooks()
    summary = transfer(params, load_builtin_image("astronaut"), [load_builtin_image("coffee")], hooks)
    # Then every scale's result is a sample artifact of that size, and the output is 256 px
    for size in MULTI_SCALES:
        data, kind, content_type = hooks.artifacts[SCALE_ARTIFACT.format(size=size)]
        assert (kind, content_type) == ("sample", "image/png")
        assert _png_size(data) == (size, size)
    assert _png_size(hooks.artifacts[OUTPUT_ARTIFACT][0]) == (256, 256)
    assert (summary["width"], summary["height"], summary["scales"]) == (256, 256, MULTI_SCALES)
    # And step numbers run on across scales: 9 steps, snapshots at 2, 4, 6, 8
    total = MULTI_STEPS * len(MULTI_SCALES)
    assert hooks.progress == (total, total)
    assert [s for s, _ in hooks.series("total_loss")] == list(range(1, total + 1))
    snapshots = sorted(name for name in hooks.artifacts if name.startswith("snapshots/"))
    assert snapshots == [SNAPSHOT_ARTIFACT.format(step=s) for s in range(SNAPSHOT_EVERY, total + 1, SNAPSHOT_EVERY)]
    assert _png_size(hooks.artifacts[SNAPSHOT_ARTIFACT.format(step=8)][0]) == (256, 256)


@pytest.mark.parametrize("stop_at", [RESUME_STEPS - 1, RESUME_STEPS, RESUME_STEPS + 2])
def test_a_killed_lbfgs_multi_scale_run_resumes_bit_identically(stop_at: int) -> None:
    # Given an uninterrupted two-scale L-BFGS run
    params = _params(size=RESUME_SCALES[-1], scales=RESUME_SCALES, steps=RESUME_STEPS, checkpoint_every=100)
    reference = _run(params)
    # When another is shut down after step stop_at (inside scale 1, at its end, inside scale 2)...
    interrupted = InMemoryHooks(stop_at_step=stop_at, stop_reason=STOP_SHUTDOWN)
    with pytest.raises(StopRequested):
        _run(params, interrupted)
    assert [s for s, _ in interrupted.checkpoints] == [stop_at]
    # ...and resumed from its checkpoint (image + L-BFGS history) by a fresh runtime
    resumed_hooks = InMemoryHooks(checkpoints=list(interrupted.checkpoints))
    resumed = _run(params, resumed_hooks)
    # Then it ran only the remaining steps and ends bit-identical
    assert resumed.summary["resumed_from_step"] == stop_at
    assert min(s for s, _ in resumed_hooks.series("total_loss")) == stop_at + 1
    assert torch.equal(resumed.image, reference.image)
    assert resumed.summary["final_metrics"] == reference.summary["final_metrics"]


def test_each_init_starts_where_it_says() -> None:
    content = to_tensor(load_builtin_image("astronaut"), SIZE)
    style = to_tensor(load_builtin_image("coffee"), SIZE)

    def start(init: str) -> torch.Tensor:
        # One Adam step with a tiny lr barely moves the start
        return _run(_params(init=init, steps=1, optimizer="adam", lr=1e-6)).image

    assert torch.allclose(start("content"), content, atol=1e-4)
    noise = start("noise")
    assert (noise - content).abs().mean() > 0.1
    assert torch.equal(noise, start("noise"))  # seeded
    stats = start("style-stats")
    torch.testing.assert_close(stats.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=0.05, rtol=0)


def test_the_lesson_preset_runs_vgg16_with_adam_and_its_layer_weights() -> None:
    params = StyleTransferParams(
        content="astronaut", styles=["coffee"], size=32, steps=2, weights="random", preset="lesson"
    )
    assert (params.network, params.optimizer, params.style_layer_weights) == (
        "vgg16",
        "adam",
        [1.0, 0.75, 0.2, 0.2, 0.2],
    )
    summary = _run(params).summary
    assert (summary["network"], summary["optimizer"]) == ("vgg16", "adam")


def test_a_larger_style_scale_gives_a_different_result() -> None:
    small = _run(_params(steps=5, style_scale=0.5)).image
    large = _run(_params(steps=5, style_scale=2.0)).image
    assert not torch.allclose(small, large, atol=1e-3)


def test_lbfgs_descends_without_the_clamped_tutorials_loss_spikes() -> None:
    # Given the tutorial's objective (conv layers, style weight 1e6), where L-BFGS on clamped
    # pixels jumps by orders of magnitude (see bench/style.py)
    params = _params(
        content_layers=["conv2_2"],
        style_layers=["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"],
        style_layer_weights=[1.0] * 5,
        style_weight=1e6,
        tv_weight=0.0,
        steps=40,
    )
    hooks = InMemoryHooks()
    _run(params, hooks)
    # Then the loss never rises past twice its best so far, and ends far below the start
    totals = [value for _, value in hooks.series("total_loss")]
    best = list(itertools.accumulate(totals, min))
    assert all(v <= LBFGS_MAX_RISE * b for v, b in zip(totals, best, strict=True)), totals
    assert totals[-1] < totals[0] / LBFGS_MIN_DROP, totals
