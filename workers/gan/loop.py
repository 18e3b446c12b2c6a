"""The two-phase DCGAN training loop: a D step on real and fake images, then a non-saturating G step.

Pure PyTorch. Everything about where the job runs (metrics, checkpoints, artifacts,
cancellation) goes through ``hooks``. On CPU a run is deterministic, and a run resumed
from any checkpoint ends with weights bit-identical to an uninterrupted one: every random
stream is a dedicated ``torch.Generator``, and the data order is a function of the step.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from shared.jobs.specs import GanTrainParams
from workers.gan.nets import Discriminator, Generator, weights_init
from workers.gan.sample import LOAD_ERRORS, generator_file, grid_png, latents
from workers.hooks import StopRequested, TrainHooks

CHECKPOINT_VERSION = 1
FIXED_NOISE_COUNT = 64
REAL_LABEL = 1.0
FAKE_LABEL = 0.0
LOSS_NAMES = ("d_loss", "g_loss")
METRIC_NAMES = (*LOSS_NAMES, "d_real", "d_fake")
SAMPLE_ARTIFACT = "samples/step-{step:07d}.png"
FINAL_SAMPLE_ARTIFACT = "samples/final.png"
GENERATOR_ARTIFACT = "generator.pt"
SAMPLE_KIND = "sample"
WEIGHTS_KIND = "weights"
PNG_CONTENT_TYPE = "image/png"
WEIGHTS_CONTENT_TYPE = "application/octet-stream"
# Independent random streams, each seeded from (params.seed, stream[, epoch]). The fixed
# noise of the sample grids is seeded by params.seed itself, as in sample.sample().
_STREAM_INIT = 1
_STREAM_NOISE = 2
_STREAM_ORDER = 3
# Params that fix the shapes of the checkpointed models and optimizers.
_ARCH_FIELDS = ("image_size", "nz", "ngf", "ndf")
_IMAGE_RANGE = (-1.0, 1.0)


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the run stops instead of training on garbage."""


def _stream_seed(seed: int, *stream: int) -> int:
    """A well-mixed 64-bit seed for one random stream of a run."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint64)[0])


class _DataOrder:
    """Dataset indices for any step: one permutation per epoch, seeded by (seed, epoch); batches wrap epochs."""

    def __init__(self, *, size: int, batch_size: int, seed: int) -> None:
        self._size = size
        self._batch_size = batch_size
        self._seed = seed
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.int64)

    def _epoch_permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(_stream_seed(self._seed, _STREAM_ORDER, epoch))
            self._permutation = torch.randperm(self._size, generator=generator)
            self._epoch = epoch
        return self._permutation

    def indices(self, step: int) -> torch.Tensor:
        """Indices of the batch of ``step`` (1-based): samples (step-1)*B .. step*B-1 of the endless order."""
        position = (step - 1) * self._batch_size
        end = position + self._batch_size
        parts: list[torch.Tensor] = []
        while position < end:
            epoch, offset = divmod(position, self._size)
            take = min(end - position, self._size - offset)
            parts.append(self._epoch_permutation(epoch)[offset : offset + take])
            position += take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class _DivergenceWatch:
    """Remembers the first step with a non-finite loss without a host sync per step; ``check`` syncs."""

    def __init__(self, device: torch.device) -> None:
        self._first_step = torch.zeros((), dtype=torch.int64, device=device)
        self._losses = torch.zeros(len(LOSS_NAMES), device=device)

    def observe(self, step: int, losses: torch.Tensor) -> None:
        """Note ``losses`` (in LOSS_NAMES order) of ``step``."""
        first_bad = (self._first_step == 0) & ~torch.isfinite(losses).all()
        self._first_step = torch.where(first_bad, step, self._first_step)
        self._losses = torch.where(first_bad, losses, self._losses)

    def check(self) -> None:
        """Raise DivergenceError if any observed loss was NaN or infinite."""
        step = int(self._first_step.item())
        if step:
            values = dict(zip(LOSS_NAMES, self._losses.tolist(), strict=True))
            bad = ", ".join(f"{name}={value}" for name, value in values.items() if not np.isfinite(value))
            raise DivergenceError(f"training diverged at step {step}: {bad}; try lower learning rates")


@dataclass
class _Models:
    """Everything a checkpoint restores: nets, optimizers and the noise generator."""

    net_g: Generator
    net_d: Discriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    noise: torch.Generator

    @classmethod
    def create(cls, params: GanTrainParams, channels: int, device: torch.device) -> _Models:
        """Fresh nets with the DCGAN init, seeded by params.seed; initialised on CPU so every device agrees."""
        init = torch.Generator().manual_seed(_stream_seed(params.seed, _STREAM_INIT))
        net_g = Generator(image_size=params.image_size, nz=params.nz, ngf=params.ngf, channels=channels)
        net_d = Discriminator(image_size=params.image_size, ndf=params.ndf, channels=channels)
        net_g.apply(partial(weights_init, generator=init))
        net_d.apply(partial(weights_init, generator=init))
        net_g.to(device)
        net_d.to(device)
        betas = (params.beta1, params.beta2)
        return cls(
            net_g=net_g,
            net_d=net_d,
            opt_g=torch.optim.Adam(net_g.parameters(), lr=params.lr_g, betas=betas),
            opt_d=torch.optim.Adam(net_d.parameters(), lr=params.lr_d, betas=betas),
            noise=torch.Generator(device=device).manual_seed(_stream_seed(params.seed, _STREAM_NOISE)),
        )

    def checkpoint(self, step: int, params: GanTrainParams, metrics: dict[str, float]) -> bytes:
        """Serialise the state after ``step`` (tensors, dicts and primitives only: weights_only loadable)."""
        payload = {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "data_position": step * params.batch_size,  # informative: the order is a function of the step
            "netG": self.net_g.state_dict(),
            "netD": self.net_d.state_dict(),
            "optG": self.opt_g.state_dict(),
            "optD": self.opt_d.state_dict(),
            "rng": {"noise": self.noise.get_state()},
            "params": params.model_dump(),
            "metrics": dict(metrics),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    def restore(self, data: bytes, params: GanTrainParams) -> tuple[int, dict[str, float]]:
        """Load a checkpoint taken with the same architecture; returns (its step, its last metrics)."""
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except LOAD_ERRORS as exc:
            raise ValueError(f"checkpoint could not be loaded: {exc}") from exc
        if payload.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {payload.get('version')!r} is not {CHECKPOINT_VERSION}")
        saved = GanTrainParams.model_validate(payload["params"])
        mismatched = [f for f in _ARCH_FIELDS if getattr(saved, f) != getattr(params, f)]
        if saved.resolved_channels() != params.resolved_channels():
            mismatched.append("channels")
        if mismatched:
            raise ValueError(f"checkpoint was taken with different {', '.join(mismatched)}; cannot resume")
        self.net_g.load_state_dict(payload["netG"])
        self.net_d.load_state_dict(payload["netD"])
        self.opt_g.load_state_dict(payload["optG"])
        self.opt_d.load_state_dict(payload["optD"])
        self.noise.set_state(payload["rng"]["noise"])
        return int(payload["step"]), {k: float(v) for k, v in payload["metrics"].items()}


def _check_data(params: GanTrainParams, channels: int, data: torch.Tensor) -> None:
    expected = (channels, params.image_size, params.image_size)
    if data.ndim != len(expected) + 1 or tuple(data.shape[1:]) != expected or data.shape[0] == 0:
        raise ValueError(f"data must have shape (N>0, {', '.join(map(str, expected))}), got {tuple(data.shape)}")
    if not data.is_floating_point():
        raise ValueError(f"data must be floating point in [-1, 1], got {data.dtype}")
    low, high = _IMAGE_RANGE
    if not bool(((data >= low) & (data <= high)).all()):  # also rejects NaN
        raise ValueError("data values must lie in [-1, 1]")


def _grid(net_g: Generator, fixed_noise: torch.Tensor) -> bytes:
    """The fixed-noise sample grid, in eval mode; consumes no random state and leaves BN statistics alone."""
    net_g.eval()
    try:
        with torch.no_grad():
            images = net_g(fixed_noise)
    finally:
        net_g.train()
    return grid_png(images)


def train(
    params: GanTrainParams, data: torch.Tensor, hooks: TrainHooks, *, device: torch.device | str = "cpu"
) -> dict[str, int | float]:
    """Train a DCGAN on ``data`` (N, C, H, W) in [-1, 1], resuming from the hooks' checkpoint; returns a summary."""
    device = torch.device(device)
    channels = params.resolved_channels()
    _check_data(params, channels, data)
    batch_size = params.batch_size

    # ---- Set up: nets, optimizers, random streams; resume if a checkpoint exists ----
    models = _Models.create(params, channels, device)
    net_g, net_d, opt_g, opt_d = models.net_g, models.net_d, models.opt_g, models.opt_d
    done = 0
    metrics: dict[str, float] = {}
    checkpoint = hooks.load_checkpoint()
    if checkpoint is not None:
        done, metrics = models.restore(checkpoint, params)
    if data.shape[0] < batch_size:
        hooks.warn(f"the dataset has {data.shape[0]} images, fewer than batch_size {batch_size}: batches repeat images")
    order = _DataOrder(size=data.shape[0], batch_size=batch_size, seed=params.seed)
    fixed_noise = latents(FIXED_NOISE_COUNT, params.nz, seed=params.seed).to(device)
    criterion = nn.BCEWithLogitsLoss()
    real_labels = torch.full((batch_size,), REAL_LABEL, device=device)
    fake_labels = torch.full((batch_size,), FAKE_LABEL, device=device)
    watch = _DivergenceWatch(device)
    grid: tuple[int, bytes] | None = None
    net_g.train()
    net_d.train()

    for step in range(done + 1, params.steps + 1):
        real = data.index_select(0, order.indices(step).to(data.device)).to(device, non_blocking=True)

        # ---- D step: maximise log D(x) + log(1 - D(G(z))) ----
        net_d.zero_grad(set_to_none=True)
        out_real = net_d(real)
        z = torch.randn(batch_size, params.nz, 1, 1, generator=models.noise, device=device)
        fake = net_g(z)
        out_fake = net_d(fake.detach())
        d_loss = criterion(out_real, real_labels) + criterion(out_fake, fake_labels)
        d_loss.backward()
        opt_d.step()

        # ---- G step: maximise log D(G(z)) (non-saturating), reusing this step's fakes ----
        net_g.zero_grad(set_to_none=True)
        net_d.requires_grad_(False)  # D's weight gradients are not needed here
        g_loss = criterion(net_d(fake), real_labels)
        g_loss.backward()
        net_d.requires_grad_(True)
        opt_g.step()
        watch.observe(step, torch.stack([d_loss.detach(), g_loss.detach()]))

        # ---- Report, sample, checkpoint (in that order: a checkpoint marks the step complete) ----
        last = step == params.steps
        log = step % params.log_every == 0 or last
        sample = step % params.sample_every == 0 or last
        saved = step % params.checkpoint_every == 0 or last
        if log or sample or saved:
            watch.check()  # syncs with the device: only on steps that report, sample or checkpoint
        if log:
            with torch.no_grad():
                values = torch.stack(
                    [d_loss, g_loss, torch.sigmoid(out_real).mean(), torch.sigmoid(out_fake).mean()]
                ).tolist()
            metrics = dict(zip(METRIC_NAMES, values, strict=True))
            hooks.report_metrics(step, metrics)
            hooks.report_progress(step, params.steps)
        if sample:
            grid = (step, _grid(net_g, fixed_noise))
            hooks.save_artifact(
                SAMPLE_ARTIFACT.format(step=step), grid[1], kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE
            )
        if saved:
            hooks.save_checkpoint(step, models.checkpoint(step, params, metrics))

        # ---- Cooperative stop: checkpoint this step, then leave ----
        reason = hooks.should_stop()
        if reason is not None:
            if not saved:
                watch.check()
                hooks.save_checkpoint(step, models.checkpoint(step, params, metrics))
            raise StopRequested(reason, step)

    # ---- Final artifacts ----
    final_png = grid[1] if grid is not None and grid[0] == params.steps else _grid(net_g, fixed_noise)
    hooks.save_artifact(FINAL_SAMPLE_ARTIFACT, final_png, kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)
    hooks.save_artifact(
        GENERATOR_ARTIFACT,
        generator_file(net_g, params.model_dump()),
        kind=WEIGHTS_KIND,
        content_type=WEIGHTS_CONTENT_TYPE,
    )
    return {"steps": params.steps, "resumed_from": done, **metrics}
