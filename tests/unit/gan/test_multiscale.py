"""Progressive growing and MSG-GAN: the growth schedule and its fade-in, gradients at every
scale for MSG, and short 128 px CPU runs whose metrics record the resolution stage.
Each test reads Given / When / Then."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch

from shared.jobs.gan_train import GanTrainParams
from tests.support.resume import stopped_and_resumed
from workers.gan import losses
from workers.gan.data import load_builtin
from workers.gan.loop import train
from workers.gan.multiscale import (
    MultiScaleDiscriminator,
    MultiScaleGenerator,
    Stage,
    progressive_stage,
    resolutions,
)
from workers.gan.sample import sample
from workers.hooks import InMemoryHooks

HIGH = 128


def test_progressive_growth_visits_every_resolution_in_equal_shares_fading_each_in() -> None:
    # Given a 120-step run at 128 px: six resolutions, 20 steps each, the first 10 of each fading in
    stages = [progressive_stage(step, 120, HIGH) for step in range(1, 121)]
    # Then the resolutions come in order, 20 steps each, and the run ends on the full network
    assert [s.resolution() for s in stages[::20]] == resolutions(HIGH) == [4, 8, 16, 32, 64, 128]
    assert stages[-1] == Stage(5, 1.0)
    # And each new resolution's alpha rises step by step to 1 over its first half, then stays
    alphas = [s.alpha for s in stages[20:40]]
    assert alphas[:10] == pytest.approx([(i + 1) / 10 for i in range(10)]) and alphas[10:] == [1.0] * 10
    assert all(s.alpha == 1.0 for s in stages[:20])


@pytest.mark.parametrize("level", [1, 3, 5])
def test_fade_in_starts_exactly_where_the_previous_resolution_left_off(level: int) -> None:
    # Given both nets at a level with alpha 0, and at the previous level fully in
    torch.manual_seed(0)
    generator = MultiScaleGenerator(image_size=HIGH, nz=8, ngf=4, channels=1).eval()
    critic = MultiScaleDiscriminator(image_size=HIGH, ndf=4, channels=1, msg=False).eval()
    z, images = torch.randn(3, 8), torch.rand(3, 1, HIGH, HIGH) * 2 - 1

    def run(stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
        generator.set_stage(stage)
        critic.set_stage(stage)
        with torch.no_grad():
            return generator(z), critic(images)

    new_g, new_d = run(Stage(level, 0.0))
    old_g, old_d = run(Stage(level - 1, 1.0))
    # Then G draws and D judges exactly as before: growing adds nothing abrupt
    torch.testing.assert_close(new_g, old_g)
    torch.testing.assert_close(new_d, old_d)
    # And G's images are full size and blocky at the stage's resolution
    assert new_g.shape == (3, 1, HIGH, HIGH)
    block = HIGH // (4 * 2 ** (level - 1))
    assert torch.equal(new_g[:, :, :block, :block], new_g[:, :, :1, :1].expand(-1, -1, block, block))


def test_msg_sends_the_discriminators_gradient_to_every_scale_of_g() -> None:
    # Given MSG nets and a generator loss on G's multi-scale images
    generator = MultiScaleGenerator(image_size=32, nz=8, ngf=4, channels=3)
    critic = MultiScaleDiscriminator(image_size=32, ndf=4, channels=3, msg=True)
    pyramid = generator.pyramid(torch.randn(4, 8))
    assert [p.shape[-1] for p in pyramid] == [4, 8, 16, 32]
    losses.g_loss("bce", critic(pyramid)).backward()
    # Then every scale's toRGB gets a gradient directly
    assert all(to_rgb.weight.grad is not None and to_rgb.weight.grad.abs().sum() > 0 for to_rgb in generator.to_rgb)
    # And D judges real images by building the pyramid itself
    assert critic(torch.rand(4, 3, 32, 32)).shape == (4,)


def _params(arch: str, **overrides: Any) -> GanTrainParams:
    values: dict[str, Any] = {
        "dataset": "digits", "arch": arch, "image_size": HIGH, "steps": 12, "batch_size": 4, "nz": 8,
        "ngf": 4, "ndf": 4, "seed": 1, "log_every": 1, "checkpoint_every": 5, "sample_every": 6,
        "image_metrics": False,
    }  # fmt: skip
    return GanTrainParams(**(values | overrides))


@pytest.fixture(scope="module")
def digits128() -> torch.Tensor:
    return load_builtin("digits", image_size=HIGH, channels=1)


@pytest.mark.parametrize("arch", ["progressive", "msg"])
def test_a_short_128px_cpu_run_records_its_resolution_stage(arch: str, digits128: torch.Tensor) -> None:
    # When a 12-step run at 128 px trains on digits
    hooks = InMemoryHooks()
    summary = train(_params(arch), digits128, hooks)
    # Then it ends with finite losses, and its metrics say which resolution each step trained
    assert np.isfinite(summary["d_loss"]) and np.isfinite(summary["g_loss"])
    resolution = [v for _, v in hooks.series("resolution")]
    fade = [v for _, v in hooks.series("fade_alpha")]
    assert len(resolution) == len(fade) == 12
    if arch == "progressive":
        assert resolution == [4.0, 4.0, 8.0, 8.0, 16.0, 16.0, 32.0, 32.0, 64.0, 64.0, 128.0, 128.0]
    else:
        assert resolution == [128.0] * 12 and fade == [1.0] * 12
    # And its generator.pt samples full-size images
    _picture, raw = sample(hooks.artifacts["generator.pt"][0], n=2, seed=0)
    assert np.load(io.BytesIO(raw)).shape == (2, 1, HIGH, HIGH)


def test_a_progressive_run_resumes_in_the_same_stage_bit_identically(digits128: torch.Tensor) -> None:
    params = _params("progressive", image_size=32, steps=12)
    data = load_builtin("digits", image_size=32, channels=1)
    whole = InMemoryHooks()
    train(params, data, whole)
    cut = stopped_and_resumed(lambda hooks: train(params, data, hooks), stop_at=7)
    assert cut.artifacts["generator.pt"][0] == whole.artifacts["generator.pt"][0]
    assert cut.series("fade_alpha") == whole.series("fade_alpha")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"arch": "msg", "diffaugment": ["color"]}, "diffaugment"),
        ({"arch": "progressive", "loss": "wgan-gp"}, "loss"),
        ({"arch": "msg", "r1_gamma": 1.0}, "r1_gamma"),
        ({"arch": "progressive", "steps": 5}, "steps"),
    ],
)
def test_combinations_the_multiscale_nets_do_not_support_are_refused(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        GanTrainParams(dataset="digits", image_size=HIGH, **overrides)
