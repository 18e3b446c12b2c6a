"""The loop's losses and remedies, each driven through InMemoryHooks on tiny nets: they run, they act, they resume."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from shared.jobs.gan_train import GanTrainParams
from tests.support.resume import stopped_and_resumed
from workers.gan import health, state
from workers.gan.data import load_builtin, load_points
from workers.gan.loop import train
from workers.gan.losses import MODE_SEEKING_EPS, mode_seeking_loss
from workers.gan.nets import Discriminator, MinibatchStd, MLPGenerator
from workers.gan.sample import sample
from workers.hooks import InMemoryHooks, StopRequested

SIZE = 16


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_builtin("digits", image_size=SIZE, channels=1)


def _image_params(**overrides: Any) -> GanTrainParams:
    values: dict[str, Any] = {
        "image_size": SIZE,
        "steps": 6,
        "batch_size": 8,
        "nz": 8,
        "ngf": 8,
        "ndf": 8,
        "seed": 5,
        "checkpoint_every": 3,
        "sample_every": 3,
    }
    return GanTrainParams(**(values | overrides))


def _point_params(**overrides: Any) -> GanTrainParams:
    values: dict[str, Any] = {
        "dataset": "ring8",
        "steps": 6,
        "batch_size": 16,
        "nz": 4,
        "ngf": 4,
        "ndf": 4,
        "seed": 5,
        "checkpoint_every": 3,
        "sample_every": 3,
    }
    return GanTrainParams(**(values | overrides))


def _load(data: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(io.BytesIO(data), weights_only=True)
    return payload


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_dense_gan_on_ring8_reports_mode_coverage_and_samples_points() -> None:
    # Given the lesson's dense GAN on a 2-D mixture, evaluated every 2 steps
    hooks = InMemoryHooks()
    train(_point_params(eval_every=2), load_points("ring8"), hooks)
    # Then modes and hq_share are job metrics at each evaluation tick
    assert [step for step, _ in hooks.series("modes")] == [2, 4, 6]
    assert all(0 <= v <= 8 for _, v in hooks.series("modes"))
    assert all(0.0 <= v <= 1.0 for _, v in hooks.series("hq_share"))
    # And the sample pictures are scatter plots; gan.sample draws raw (n, 2) points
    with Image.open(io.BytesIO(hooks.artifacts["samples/final.png"][0])) as picture:
        assert picture.format == "PNG" and picture.size == (512, 512)
    png, raw = sample(hooks.artifacts["generator.pt"][0], n=10, seed=1)
    assert np.load(io.BytesIO(raw)).shape == (10, 2)
    assert png.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "remedies",
    [
        {"loss": "hinge", "spectral_norm": True},
        {"loss": "wgan-gp", "n_critic": 2},
        {"r1_gamma": 1.0, "label_smoothing": 0.1, "ema": 0.9},
        {"diffaugment": ["color", "translation", "cutout"], "ema": 0.99, "spectral_norm": True},
        {"arch": "mlp", "loss": "hinge", "ema": 0.9},
        {"minibatch_std": 4, "pack": 2},
        {"mode_seeking": 1.0, "ema": 0.9},
    ],
)
def test_every_remedy_trains_and_resumes_bit_identically(digits: torch.Tensor, remedies: dict[str, Any]) -> None:
    params = _image_params(**remedies)
    # Given an uninterrupted run, and one stopped at step 4 then resumed from its checkpoint
    whole = InMemoryHooks()
    train(params, digits, whole)
    cut = stopped_and_resumed(lambda hooks: train(params, digits, hooks), stop_at=4)
    # Then both end with the same generator, EMA, discriminator and metrics
    assert whole.artifacts["generator.pt"][0] == cut.artifacts["generator.pt"][0]
    end_whole, end_cut = _load(whole.checkpoints[-1][1]), _load(cut.checkpoints[-1][1])
    for net in ("netG", "netD", "netG_ema"):
        if net in end_whole:
            assert _state_equal(end_whole[net], end_cut[net]), net
    assert all(cut.metrics[(n, s)] == v for (n, s), v in whole.metrics.items() if s > 4)
    assert all(np.isfinite(v) for v in whole.metrics.values())


def test_ema_generator_ships_and_differs_from_the_trained_one(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    train(_image_params(ema=0.9), digits, hooks)
    final = _load(hooks.checkpoints[-1][1])
    shipped = _load(hooks.artifacts["generator.pt"][0])["state_dict"]
    assert _state_equal(shipped, final["netG_ema"])
    assert not _state_equal(shipped, final["netG"])


def test_spectral_norm_keeps_d_layers_near_unit_norm(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    params = _image_params(spectral_norm=True, steps=10)
    train(params, digits, hooks)
    models = state.Models.create(params, 1, torch.device("cpu"))
    models.restore(hooks.checkpoints[-1][1], params)
    net_d = models.net_d
    convs = [m for m in net_d.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(hasattr(m, "parametrizations") for m in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net_d.modules())  # SN replaces D's batch norm
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(conv.weight.shape[0], -1), ord=2)
        assert 0.9 < float(sigma) < 1.1


def test_d_skips_while_its_loss_is_below_the_threshold(digits: torch.Tensor) -> None:
    # Given a threshold no BCE loss stays under...and one every loss is under
    never, always = InMemoryHooks(), InMemoryHooks()
    train(_image_params(d_skip_threshold=1e-9), digits, never)
    train(_image_params(d_skip_threshold=100.0), digits, always)
    # Then d_skips counts every skipped D step, and a skipped D never moves
    assert never.series("d_skips")[-1] == (6, 0.0)
    assert always.series("d_skips")[-1] == (6, 6.0)
    first = dict(state.Models.create(_image_params(), 1, torch.device("cpu")).net_d.named_parameters())
    last = _load(always.checkpoints[-1][1])["netD"]
    assert all(torch.equal(last[name], value) for name, value in first.items())  # BN statistics do move
    assert all(v == 0.0 for _, v in always.series("grad_norm_d"))
    assert all(v > 0.0 for _, v in never.series("grad_norm_d"))


def test_n_critic_takes_that_many_d_steps_per_g_step(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    train(_image_params(n_critic=3, loss="wgan-gp", steps=4, checkpoint_every=4), digits, hooks)
    final = _load(hooks.checkpoints[-1][1])
    assert float(final["optD"]["state"][0]["step"]) == 12
    assert float(final["optG"]["state"][0]["step"]) == 4


def test_per_step_metrics_include_learning_rates_and_gradient_norms(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    train(_image_params(lr_g=3e-4, lr_d=1e-4, log_every=2), digits, hooks)
    assert hooks.series("lr_g") == [(2, 3e-4), (4, 3e-4), (6, 3e-4)]
    assert hooks.series("lr_d")[0] == (2, 1e-4)
    assert all(v > 0 for _, v in hooks.series("grad_norm_g"))


def test_linear_decay_takes_the_learning_rates_to_zero(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    train(_image_params(lr_g=3e-4, lr_d=1e-4, lr_decay="linear", steps=4, log_every=1), digits, hooks)
    assert [round(v, 12) for _, v in hooks.series("lr_g")] == [3e-4, 2.25e-4, 1.5e-4, 0.75e-4]
    assert hooks.series("lr_d")[-1] == (4, pytest.approx(0.25e-4))
    # a resumed run sets the rate of its step, not the last one it saved
    cut = InMemoryHooks(stop_at_step=2)
    with pytest.raises(StopRequested):
        train(_image_params(lr_decay="linear", steps=4), digits, cut)
    cut.stop_at_step = None
    train(_image_params(lr_decay="linear", steps=4), digits, cut)
    whole = InMemoryHooks()
    train(_image_params(lr_decay="linear", steps=4), digits, whole)
    assert cut.artifacts["generator.pt"] == whole.artifacts["generator.pt"]


def test_a_d_that_wins_for_a_long_stretch_is_reported(digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a fast D and a G that barely learns
    monkeypatch.setattr(health, "D_WON_STEPS", 20)
    quiet, hooks = InMemoryHooks(), InMemoryHooks()
    train(_image_params(steps=40, sample_every=100), digits, quiet)
    train(_image_params(steps=40, lr_d=0.01, lr_g=1e-7, sample_every=100), digits, hooks)
    # Then the job carries a "D has won" warning, and a balanced run does not
    assert [w for w in hooks.warnings if w.startswith("D has won")], hooks.warnings
    assert not [w for w in quiet.warnings if w.startswith("D has won")], quiet.warnings


class _StuckGenerator(MLPGenerator):
    """A generator whose every sample is the same point, whatever the latent."""

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(torch.zeros_like(z))


def test_a_collapsed_generator_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "MLPGenerator", _StuckGenerator)
    monkeypatch.setattr(health, "WARN_MIN_STEP", 1)
    hooks = InMemoryHooks()
    train(_point_params(steps=8, sample_every=4, eval_every=4), load_points("ring8"), hooks)
    assert hooks.series("diversity")[-1][1] < 1e-6
    assert hooks.series("modes")[-1][1] <= 1
    assert [w for w in hooks.warnings if w.startswith("possible mode collapse")], hooks.warnings


def test_point_data_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(N>0, 2\)"):
        train(_point_params(), torch.zeros(10, 3), InMemoryHooks())
    with pytest.raises(ValueError, match="finite"):
        train(_point_params(), torch.full((10, 2), float("inf")), InMemoryHooks())


def test_the_dense_gan_on_images_samples_image_grids(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    train(_image_params(arch="mlp", steps=2), digits, hooks)
    png, raw = sample(hooks.artifacts["generator.pt"][0], n=5, seed=2)
    images = np.load(io.BytesIO(raw))
    assert images.shape == (5, 1, SIZE, SIZE)
    assert float(images.min()) >= -1.0 and float(images.max()) <= 1.0
    with Image.open(io.BytesIO(png)) as grid:
        assert grid.format == "PNG"


def test_the_minibatch_std_layer_shows_d_how_varied_each_group_is() -> None:
    # Given a batch of 8 feature maps: group (0, 2, 4, 6) all alike, group (1, 3, 5, 7) varied
    layer = MinibatchStd(4)
    same, varied = torch.ones(2, 3, 3), torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    x = torch.stack([same if i % 2 == 0 else varied[i // 2] for i in range(8)])
    # When it runs
    out = layer(x)
    # Then one constant map joins the features; it reads about 0 for the alike group, the spread for the other
    assert out.shape == (8, 3, 3, 3) and torch.equal(out[:, :2], x)
    assert torch.allclose(out[0::2, 2], torch.full((4, 3, 3), 1e-4), atol=1e-4)
    spread = varied.std(dim=0, unbiased=False).mean()
    assert torch.allclose(out[1::2, 2], spread.expand(4, 3, 3), rtol=1e-4)
    # And a batch that does not split into its groups is refused, naming the option
    with pytest.raises(ValueError, match="minibatch_std groups of 4"):
        layer(torch.zeros(6, 2, 3, 3))
    # And D grows by exactly one input channel of its last convolution
    plain = Discriminator(image_size=32, ndf=8, channels=1)
    with_std = Discriminator(image_size=32, ndf=8, channels=1, minibatch_std=4)
    extra = sum(p.numel() for p in with_std.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 4 * 4  # one 4 x 4 kernel slice
    assert with_std(torch.zeros(8, 1, 32, 32)).shape == (8,)


def test_the_mode_seeking_term_is_small_when_distinct_latents_give_distinct_samples() -> None:
    # Given latents, and three generators' outputs for them: all alike, a little apart, far apart
    z = torch.randn(8, 4, 1, 1, generator=torch.Generator().manual_seed(0))
    alike = torch.zeros(8, 1, 4, 4)
    near, far = alike + 0.01 * torch.arange(8.0).reshape(8, 1, 1, 1), alike + torch.arange(8.0).reshape(8, 1, 1, 1)
    # Then the term is 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + eps): huge, large, small
    spread = float((z[:4] - z[4:]).abs().mean())
    assert float(mode_seeking_loss(alike, z)) == pytest.approx(1 / MODE_SEEKING_EPS)
    assert float(mode_seeking_loss(near, z)) == pytest.approx(1 / (0.04 / spread + MODE_SEEKING_EPS), rel=1e-4)
    assert float(mode_seeking_loss(far, z)) == pytest.approx(1 / (4.0 / spread + MODE_SEEKING_EPS), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        mode_seeking_loss(alike[:1], z[:1])


def test_mode_seeking_changes_the_generators_update_but_not_the_reported_g_loss(digits: torch.Tensor) -> None:
    # Given the same seeded run with and without the term
    plain, seeking = InMemoryHooks(), InMemoryHooks()
    train(_image_params(steps=2), digits, plain)
    train(_image_params(steps=2, mode_seeking=1.0), digits, seeking)
    # Then step 1's losses are the same (the term only adds to G's gradient), and G's weights then differ
    assert seeking.metrics[("g_loss", 1)] == plain.metrics[("g_loss", 1)]
    assert seeking.metrics[("d_loss", 1)] == plain.metrics[("d_loss", 1)]
    assert seeking.artifacts["generator.pt"][0] != plain.artifacts["generator.pt"][0]
