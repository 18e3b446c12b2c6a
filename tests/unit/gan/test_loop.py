"""The DCGAN training loop, driven through InMemoryHooks: schedule, resume, cancel, divergence."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from PIL import Image

from shared.jobs.gan_train import GanTrainParams
from workers.gan import state
from workers.gan.data import load_builtin, load_points
from workers.gan.loop import train
from workers.gan.nets import Discriminator, Generator
from workers.hooks import STOP_CANCEL, STOP_SHUTDOWN, InMemoryHooks, StopRequested
from workers.training import DivergenceError

SIZE = 16
GRID_SIDE = 8 * (SIZE + 2) + 2  # 64 fixed-noise images, 8 per row, 2 px padding
METRICS = {"d_loss", "g_loss", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "lr_d", "lr_g", "d_skips"}
D_CALLS_PER_STEP = 3  # real batch, detached fakes, fakes for the G step


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_builtin("digits", image_size=SIZE, channels=1)


def _params(**overrides: Any) -> GanTrainParams:
    values: dict[str, Any] = {
        "dataset": "digits",
        "image_size": SIZE,
        "steps": 12,
        "batch_size": 16,
        "nz": 16,
        "ngf": 16,
        "ndf": 16,
        "seed": 3,
        "log_every": 4,
        "checkpoint_every": 5,
        "sample_every": 6,
    }
    values.update(overrides)
    return GanTrainParams(**values)


def _load(data: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = torch.load(io.BytesIO(data), weights_only=True)
    return payload


def _metric_steps(hooks: InMemoryHooks) -> set[int]:
    return {step for _, step in hooks.metrics}


def test_metrics_checkpoints_and_samples_follow_the_schedule(digits: torch.Tensor) -> None:
    # Given 12 steps, logging every 4, checkpointing every 5 and sampling every 6
    hooks = InMemoryHooks()
    # When the loop runs
    summary = train(_params(), digits, hooks)
    # Then each happens on its multiples and on the last step (sample ticks record the samples' diversity)
    assert _metric_steps(hooks) == {4, 6, 8, 12}
    assert {name for name, _ in hooks.metrics} == {*METRICS, "diversity"}
    assert {step for name, step in hooks.metrics if name in METRICS} == {4, 8, 12}
    assert {step for name, step in hooks.metrics if name == "diversity"} == {6, 12}
    assert all(0.0 < hooks.metrics[(name, 12)] < 1.0 for name in ("d_real", "d_fake"))
    assert hooks.progress == (12, 12)
    assert [step for step, _ in hooks.checkpoints] == [5, 10, 12]
    assert set(hooks.artifacts) == {
        "samples/step-0000006.png",
        "samples/step-0000012.png",
        "samples/final.png",
        "samples/interpolation.png",
        "plots/losses.png",
        "generator.pt",
    }
    assert summary == {"steps": 12, "resumed_from": 0, **{n: hooks.metrics[(n, 12)] for n in METRICS}}


def test_sample_grids_are_pngs_of_the_fixed_noise(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    train(_params(), digits, hooks)
    for name in ("samples/step-0000006.png", "samples/step-0000012.png", "samples/final.png"):
        data, kind, content_type = hooks.artifacts[name]
        assert (kind, content_type) == ("sample", "image/png")
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            assert image.size == (GRID_SIDE, GRID_SIDE)
    # The last grid is the final one; an earlier one differs because G has trained since.
    assert hooks.artifacts["samples/final.png"][0] == hooks.artifacts["samples/step-0000012.png"][0]
    assert hooks.artifacts["samples/step-0000006.png"][0] != hooks.artifacts["samples/final.png"][0]


def test_checkpoints_and_generator_load_with_weights_only(digits: torch.Tensor) -> None:
    params = _params()
    hooks = InMemoryHooks()
    train(params, digits, hooks)

    checkpoint = _load(hooks.checkpoints[0][1])
    assert {"version", "step", "netG", "netD", "optG", "optD", "rng", "params"} <= set(checkpoint)
    assert checkpoint["step"] == 5
    assert checkpoint["params"] == params.model_dump()
    assert isinstance(checkpoint["rng"]["noise"], torch.Tensor)

    data, kind, content_type = hooks.artifacts["generator.pt"]
    assert (kind, content_type) == ("weights", "application/octet-stream")
    weights = _load(data)
    assert weights["arch"] == {"image_size": SIZE, "nz": 16, "ngf": 16, "channels": 1, "num_classes": 0}
    net = Generator(**weights["arch"])
    net.load_state_dict(weights["state_dict"])  # strict: every tensor fits
    final = _load(hooks.checkpoints[-1][1])["netG"]
    assert all(torch.equal(final[k], weights["state_dict"][k]) for k in final)


def test_same_seed_same_run_other_seed_other_run(digits: torch.Tensor) -> None:
    runs = [InMemoryHooks() for _ in range(3)]
    for hooks, seed in zip(runs, [7, 7, 8], strict=True):
        train(_params(steps=3, seed=seed), digits, hooks)
    weights = [_load(h.artifacts["generator.pt"][0])["state_dict"] for h in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert runs[0].metrics == runs[1].metrics
    assert not torch.equal(weights[0]["main.0.weight"], weights[2]["main.0.weight"])


def test_resume_after_a_stop_is_bit_identical(digits: torch.Tensor) -> None:
    params = _params(steps=30, checkpoint_every=10, log_every=1, sample_every=10)
    # Given an uninterrupted run A
    run_a = InMemoryHooks()
    train(params, digits, run_a)
    # When run B is stopped at step 15, then resumed from its last checkpoint
    run_b = InMemoryHooks(stop_at_step=15, stop_reason=STOP_SHUTDOWN)
    with pytest.raises(StopRequested) as stopped:
        train(params, digits, run_b)
    assert (stopped.value.reason, stopped.value.step) == (STOP_SHUTDOWN, 15)
    assert [step for step, _ in run_b.checkpoints] == [10, 15]
    run_b.stop_at_step = None
    summary = train(params, digits, run_b)
    # Then B's final weights, D included, and every later metric equal A's exactly
    assert summary["resumed_from"] == 15
    weights_a = _load(run_a.artifacts["generator.pt"][0])["state_dict"]
    weights_b = _load(run_b.artifacts["generator.pt"][0])["state_dict"]
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    disc_a, disc_b = _load(run_a.checkpoints[-1][1])["netD"], _load(run_b.checkpoints[-1][1])["netD"]
    assert all(torch.equal(disc_a[k], disc_b[k]) for k in disc_a)
    for step in range(16, 31):
        assert {n: run_b.metrics[(n, step)] for n in METRICS} == {n: run_a.metrics[(n, step)] for n in METRICS}
    assert run_b.artifacts["samples/final.png"][0] == run_a.artifacts["samples/final.png"][0]
    # And so are the pictures drawn at the end: the loss history came back with the checkpoint
    for name in ("plots/losses.png", "samples/interpolation.png"):
        assert run_b.artifacts[name][0] == run_a.artifacts[name][0], name


def test_resume_from_an_older_checkpoint_replays_the_same_steps(digits: torch.Tensor) -> None:
    # Given a run that checkpointed at step 10 of 20, then died (later work lost)
    params = _params(steps=20, checkpoint_every=10, log_every=1, sample_every=20)
    run_a = InMemoryHooks()
    train(params, digits, run_a)
    step_10 = next(data for step, data in run_a.checkpoints if step == 10)
    # When a fresh attempt resumes from that checkpoint
    retry = InMemoryHooks(checkpoints=[(10, step_10)])
    train(params, digits, retry)
    # Then steps 11..20 are replayed exactly
    assert _metric_steps(retry) == set(range(11, 21))
    assert all(retry.metrics[key] == run_a.metrics[key] for key in retry.metrics)
    assert retry.artifacts["generator.pt"][0] == run_a.artifacts["generator.pt"][0]


@pytest.mark.parametrize(("stop_at", "expected"), [(7, [5, 7]), (10, [5, 10])])
def test_cancel_checkpoints_once_then_stops(digits: torch.Tensor, stop_at: int, expected: list[int]) -> None:
    hooks = InMemoryHooks(stop_at_step=stop_at)
    with pytest.raises(StopRequested) as stopped:
        train(_params(log_every=1), digits, hooks)
    assert (stopped.value.reason, stopped.value.step) == (STOP_CANCEL, stop_at)
    assert [step for step, _ in hooks.checkpoints] == expected
    assert _load(hooks.checkpoints[-1][1])["step"] == stop_at
    assert max(_metric_steps(hooks)) == stop_at
    assert "generator.pt" not in hooks.artifacts


def test_resuming_a_finished_run_only_writes_the_final_artifacts(digits: torch.Tensor) -> None:
    params = _params(steps=4)
    done = InMemoryHooks()
    train(params, digits, done)
    again = InMemoryHooks(checkpoints=[done.checkpoints[-1]])
    summary = train(params, digits, again)
    assert again.metric_log == []
    assert again.checkpoints == [done.checkpoints[-1]]
    assert again.artifacts["generator.pt"] == done.artifacts["generator.pt"]
    assert again.artifacts["samples/final.png"] == done.artifacts["samples/final.png"]
    assert summary["d_loss"] == done.metrics[("d_loss", 4)]


class _PoisonedDiscriminator(Discriminator):
    """A discriminator whose logits turn NaN from a given training step on."""

    poison_from_step = 7

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = super().forward(x)
        self.calls += 1
        if self.calls > D_CALLS_PER_STEP * (self.poison_from_step - 1):
            return logits * float("nan")
        return logits


def test_a_nan_loss_fails_the_run_naming_the_step(digits: torch.Tensor, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a discriminator that goes NaN at step 7, between two checks (log and checkpoint every 5)
    monkeypatch.setattr(state, "Discriminator", _PoisonedDiscriminator)
    hooks = InMemoryHooks()
    # When the loop runs
    with pytest.raises(DivergenceError, match=r"diverged at step 7: non-finite loss \(d_loss=nan, g_loss=nan\)"):
        train(_params(log_every=5, checkpoint_every=5, sample_every=20), digits, hooks)
    # Then nothing after the last good step was recorded or checkpointed
    assert _metric_steps(hooks) == {5}
    assert [step for step, _ in hooks.checkpoints] == [5]
    assert "generator.pt" not in hooks.artifacts


def test_a_checkpoint_of_another_architecture_is_refused(digits: torch.Tensor) -> None:
    first = InMemoryHooks()
    train(_params(steps=2), digits, first)
    with pytest.raises(ValueError, match="different ngf"):
        train(_params(steps=2, ngf=8), digits, InMemoryHooks(checkpoints=list(first.checkpoints)))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a checkpoint", "checkpoint could not be loaded: "),
        (None, f"checkpoint could not be loaded: version 0 is not {state.CHECKPOINT_VERSION}"),
    ],
)
def test_an_unreadable_or_foreign_checkpoint_is_refused(data: bytes | None, reason: str) -> None:
    if data is None:  # a readable torch file from another version of Atelier
        buffer = io.BytesIO()
        torch.save({"version": 0, "step": 1}, buffer)
        data = buffer.getvalue()
    points = load_points("ring8")
    params = GanTrainParams(dataset="ring8", steps=2, batch_size=8, nz=2, ngf=4, ndf=4)
    with pytest.raises(ValueError, match=f"^{reason}"):
        train(params, points, InMemoryHooks(checkpoints=[(1, data)]))


@pytest.mark.parametrize(
    ("trained", "resumed"),
    [({"g_batchnorm": True}, {"g_batchnorm": False}), ({"pack": 2}, {"pack": 1})],
    ids=["g_batchnorm", "pack"],
)
def test_a_point_checkpoint_is_not_resumed_with_another_network(
    trained: dict[str, Any], resumed: dict[str, Any]
) -> None:
    # Given a finished point run (G with batch norm; or a PacGAN D judging pairs)
    points = load_points("ring8")
    first = InMemoryHooks()
    params = GanTrainParams(dataset="ring8", steps=2, batch_size=8, nz=2, ngf=4, ndf=4, **trained)
    result = train(params, points, first)
    assert result["steps"] == 2 and math.isfinite(result["d_loss"])
    # Then its checkpoint does not resume a run whose networks differ in that field
    (field,) = resumed
    with pytest.raises(ValueError, match=f"different {field}"):
        train(params.model_copy(update=resumed), points, InMemoryHooks(checkpoints=first.checkpoints))


@pytest.mark.parametrize(
    "extra", [{}, {"r1_gamma": 1.0}, {"loss": "wgan-gp"}, {"diffaugment": ["translation"]}], ids=str
)
def test_a_packed_dcgan_trains_with_each_regulariser(digits: torch.Tensor, extra: dict[str, Any]) -> None:
    # Given a DCGAN whose D judges pairs of images, with a penalty or augmentation on top
    hooks = InMemoryHooks()
    result = train(_params(steps=3, pack=2, log_every=1, **extra), digits, hooks)
    # Then every step trains and reports finite losses and D outputs
    assert result["steps"] == 3
    for name in ("d_loss", "g_loss", "d_real", "d_fake", "grad_norm_d"):
        assert [s for s, _ in hooks.series(name)] == [1, 2, 3], name
        assert all(math.isfinite(v) for _, v in hooks.series(name)), name


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.zeros(4, 3, SIZE, SIZE), r"shape \(N>0, 1, 16, 16\)"),
        (torch.zeros(0, 1, SIZE, SIZE), r"shape \(N>0, 1, 16, 16\)"),
        (torch.full((4, 1, SIZE, SIZE), float("nan")), r"\[-1, 1\]"),
        (torch.full((4, 1, SIZE, SIZE), 255.0), r"\[-1, 1\]"),
        (torch.zeros(4, 1, SIZE, SIZE, dtype=torch.uint8), "floating point"),
    ],
)
def test_bad_data_is_refused(data: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train(_params(), data, InMemoryHooks())


def test_a_dataset_smaller_than_a_batch_wraps_and_warns(digits: torch.Tensor) -> None:
    hooks = InMemoryHooks()
    summary = train(_params(steps=2, batch_size=16), digits[:5], hooks)
    assert summary["steps"] == 2
    assert hooks.warnings == ["the dataset has 5 images, fewer than batch_size 16: batches repeat images"]


def test_data_order_is_a_function_of_the_step() -> None:
    size, batch = 10, 4
    order = state.DataOrder(size=size, batch_size=batch, seed=1)
    batches = [order.indices(step) for step in range(1, 6)]  # 20 samples: exactly two epochs
    flat = torch.cat(batches)
    # Each epoch is a permutation, a batch wraps across the boundary, and epochs differ.
    assert sorted(flat[:size].tolist()) == list(range(size))
    assert sorted(flat[size:].tolist()) == list(range(size))
    assert not torch.equal(flat[:size], flat[size:])
    # A fresh order (a resumed run) gives the same batch for any step, in any visiting order.
    fresh = state.DataOrder(size=size, batch_size=batch, seed=1)
    assert torch.equal(fresh.indices(5), batches[4])
    assert torch.equal(fresh.indices(3), batches[2])
    assert not torch.equal(state.DataOrder(size=size, batch_size=batch, seed=2).indices(1), batches[0])
