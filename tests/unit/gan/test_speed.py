"""The GAN loop's GPU speed path, checked on CPU: bf16 autocast trains (losses stay fp32),
is a different computation from fp32, and stays deterministic for resume; ``auto`` keeps CPU
runs in fp32. The GPU speed-up itself is bench-gan's to measure. Each test reads Given / When / Then."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from shared.jobs.gan_train import GanTrainParams
from tests.support.resume import stopped_and_resumed
from workers.gan.data import load_builtin
from workers.gan.loop import train
from workers.hooks import InMemoryHooks
from workers.training import SpeedPath


def _params(**overrides: Any) -> GanTrainParams:
    values: dict[str, Any] = {
        "dataset": "digits", "image_size": 16, "steps": 12, "batch_size": 16, "nz": 8, "ngf": 8, "ndf": 8,
        "seed": 5, "log_every": 1, "checkpoint_every": 5, "sample_every": 6,
    }  # fmt: skip
    return GanTrainParams(**(values | overrides))


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_builtin("digits", image_size=16, channels=1)


def test_auto_is_fp32_on_cpu_and_bf16_can_be_forced() -> None:
    assert SpeedPath.of("auto", torch.device("cpu")) == SpeedPath(bf16=False, channels_last=False, device_type="cpu")
    assert SpeedPath.of("bf16", torch.device("cpu")).bf16
    assert not SpeedPath.of("fp32", torch.device("cpu")).bf16


def test_bf16_autocast_trains_with_fp32_losses_and_resumes_exactly(digits: torch.Tensor) -> None:
    # Given the same run in fp32 and under bf16 autocast
    fp32, bf16 = InMemoryHooks(), InMemoryHooks()
    train(_params(precision="fp32"), digits, fp32)
    train(_params(precision="bf16"), digits, bf16)
    # Then both train with finite losses, and bf16 is really a different computation
    for hooks in (fp32, bf16):
        assert all(math.isfinite(v) for _, v in hooks.series("d_loss") + hooks.series("g_loss"))
    assert bf16.series("d_loss") != fp32.series("d_loss")
    # And a bf16 run stopped at step 7 and resumed ends bit-identical to the uninterrupted one
    cut = stopped_and_resumed(lambda hooks: train(_params(precision="bf16"), digits, hooks), stop_at=7)
    assert cut.artifacts["generator.pt"][0] == bf16.artifacts["generator.pt"][0]


def test_logged_metrics_come_back_from_the_device_in_batches(
    digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 120-step run logging every step, sampling and checkpointing only at the end,
    # and flushes due every FLUSH_STEPS logged steps only
    from workers import training

    monkeypatch.setattr(training, "FLUSH_INTERVAL_S", math.inf)
    reads: list[int] = []
    real_first_bad = training.DivergenceWatch.first_bad_step

    def counted(self: Any) -> int:
        reads.append(1)
        return real_first_bad(self)

    monkeypatch.setattr(training.DivergenceWatch, "first_bad_step", counted)
    hooks = InMemoryHooks()
    params = _params(steps=120, sample_every=1000, checkpoint_every=1000, image_size=16)
    # When it runs
    train(params, digits, hooks)
    # Then the device was read three times (after 50, 100 and the last step), not 120 times...
    assert training.FLUSH_STEPS == 50 and len(reads) == 3
    # ...and every step's metrics still arrived, in order
    assert [s for s, _ in hooks.series("d_loss")] == list(range(1, 121))
    assert hooks.progress == (120, 120)
