"""The style loop's speed paths, checked on CPU: no host sync per step (losses are read back
in batches), bf16 autocast of the encoder holding quality, and channels_last giving the same
features. The GPU speed-up itself is a benchmark (bench/style.py), not a test.

Each test reads Given / When / Then."""

from __future__ import annotations

import importlib
import math
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from shared.jobs.style_transfer import StyleTransferParams
from workers import training
from workers.hooks import InMemoryHooks
from workers.style.images import load_builtin_image, to_tensor
from workers.style.transfer import TransferResult, run_transfer
from workers.style.vgg import build_vgg
from workers.training import SpeedPath

# The module, not the function that workers.style re-exports under the same name.
transfer_module = importlib.import_module("workers.style.transfer")

SIZE = 48
LAYERS = {"content_layers": ["relu3_1"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}
CONTENT = load_builtin_image("astronaut")
STYLE = load_builtin_image("coffee")
BF16_LOSS_RTOL = 0.05  # final total loss within 5 % of the fp32 run's


def _params(**overrides: Any) -> StyleTransferParams:
    fields: dict[str, Any] = {
        "content": "astronaut",
        "styles": ["coffee"],
        "size": SIZE,
        "steps": 30,
        "weights": "random",
        "optimizer": "adam",
        "style_weight": 1e3,
        "checkpoint_every": 10_000,
        **LAYERS,
    }
    return StyleTransferParams(**(fields | overrides))


def _run(params: StyleTransferParams, hooks: InMemoryHooks | None = None) -> TransferResult:
    return run_transfer(params, CONTENT, [STYLE], hooks or InMemoryHooks())


class ScalarReads(TorchDispatchMode):
    """Counts aten._local_scalar_dense: what .item(), float(t) and bool(t) run (a sync on CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_adam_loop_reads_losses_back_in_batches_not_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a 120-step Adam run logging every step, with flushes due every FLUSH_STEPS steps only
    monkeypatch.setattr(training, "FLUSH_INTERVAL_S", math.inf)
    steps = 120
    reads = ScalarReads()
    transfers: list[int] = []
    real_step_fn, real_add, real_flush = (
        transfer_module._step_fn,
        training.MetricLog.add,
        training.MetricLog.flush,
    )

    def watched_step_fn(*args: Any) -> Any:
        step = real_step_fn(*args)

        def run() -> Any:
            with reads:
                return step()

        return run

    def watched_add(self: Any, *args: Any) -> None:
        with reads:
            real_add(self, *args)

    def counted_flush(self: Any) -> None:
        if self.pending:  # one device-to-host transfer of every queued step
            transfers.append(len(self.pending))
        real_flush(self)

    monkeypatch.setattr(transfer_module, "_step_fn", watched_step_fn)
    monkeypatch.setattr(training.MetricLog, "add", watched_add)
    monkeypatch.setattr(training.MetricLog, "flush", counted_flush)
    hooks = InMemoryHooks()
    # When it runs
    _run(_params(steps=steps, log_every=1), hooks)
    # Then forward, backward, the fused Adam step and the logging never read a scalar to the host...
    assert reads.count == 0
    # ...the losses came back in ceil(120 / 50) = 3 transfers holding every step...
    assert transfers == [50, 50, 20]
    # ...and every step's losses were still reported
    assert [s for s, _ in hooks.series("total_loss")] == list(range(1, steps + 1))


def test_a_diverged_step_is_still_caught_and_named() -> None:
    # Given a run whose style weight overflows fp32, so its losses are infinite from step 1
    params = _params(steps=40, style_weight=1e300)
    # When it runs, Then the batched check fails it naming step 1, the first non-finite one
    with pytest.raises(training.DivergenceError, match="diverged at step 1: non-finite loss") as caught:
        _run(params)
    assert caught.value.step == 1
    assert caught.value.losses["style_loss"] == math.inf


def fp32_losses(params: StyleTransferParams, image: torch.Tensor) -> dict[str, float]:
    """The losses of ``image`` under the fp32 definition (fp32 encoder, same targets)."""
    encoder = build_vgg("vgg19", "random", seed=params.seed, layers=LAYERS["content_layers"] + LAYERS["style_layers"])
    loss_fn = transfer_module._loss_fn(params, encoder, to_tensor(CONTENT, SIZE), [to_tensor(STYLE, SIZE)])
    with torch.no_grad():
        return {name: value.item() for name, value in loss_fn(image).items()}


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_bf16_autocast_holds_quality_on_the_encoder(optimizer: str) -> None:
    # Given the same run in fp32 and with the encoder under bf16 autocast
    fp32 = _run(_params(precision="fp32", optimizer=optimizer))
    bf16 = _run(_params(precision="bf16", optimizer=optimizer))
    # Then each says what it ran, and the bf16 run's image, scored by the fp32 losses, is as good
    assert (fp32.summary["precision"], bf16.summary["precision"]) == ("fp32", "bf16")
    reference = fp32_losses(_params(), fp32.image)
    scored = fp32_losses(_params(), bf16.image)
    assert scored["total"] == pytest.approx(reference["total"], rel=BF16_LOSS_RTOL)
    assert scored["total"] < fp32_losses(_params(), to_tensor(CONTENT, SIZE))["total"] / 2  # it did transfer
    # And it is a different computation, not fp32 under another name
    assert not torch.equal(bf16.image, fp32.image)


def test_auto_precision_is_fp32_on_cpu() -> None:
    assert _run(_params(steps=1)).summary["precision"] == "fp32"


def test_channels_last_and_bf16_give_the_encoders_features() -> None:
    # Given an encoder and an image
    encoder = build_vgg("vgg19", "random", seed=0, layers=["relu1_1", "relu3_1"])
    image = to_tensor(CONTENT, SIZE)
    plain = encoder(image)
    # When it is wrapped for channels_last (as on CUDA), and for bf16 autocast
    last = transfer_module.encode_on(SpeedPath(False, True, "cpu"), encoder.to(memory_format=torch.channels_last))(
        image
    )
    half = transfer_module.encode_on(SpeedPath(True, False, "cpu"), encoder)(image)
    # Then the features are the same (channels_last) or close (bf16), and always fp32 for the losses
    for layer in plain:
        torch.testing.assert_close(last[layer], plain[layer], rtol=1e-4, atol=1e-5)
        assert half[layer].dtype == torch.float32
        assert (half[layer] - plain[layer]).abs().mean() < 0.02 * plain[layer].abs().mean()
