"""A GAN run's model state: nets, EMA generator, optimizers and random streams, checkpointed and restored.

Every random stream is a dedicated ``torch.Generator`` seeded from (params.seed, stream[, step or
epoch]), and the data order is a function of the step, so on CPU a resumed run ends bit-identical
to an uninterrupted one.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from shared.jobs.gan_train import GanTrainParams
from workers.gan import losses
from workers.gan.data import load_versioned
from workers.gan.health import Monitor
from workers.gan.multiscale import MSG, MULTISCALE_ARCHS, MultiScaleDiscriminator, MultiScaleGenerator
from workers.gan.nets import (
    Discriminator,
    Generator,
    MLPDiscriminator,
    MLPGenerator,
    add_spectral_norm,
    weights_init,
)
from workers.training import fused_adam, to_device

CHECKPOINT_VERSION = 1
# Independent random streams, each seeded from (params.seed, stream[, epoch]). The fixed
# noise of the sample grids is seeded by params.seed itself, as in sample.sample().
# Independent random streams, each seeded from (params.seed, stream[, epoch]). The fixed
# noise of the sample grids is seeded by params.seed itself, as in sample.sample().
STREAM_INIT = 1
STREAM_NOISE = 2
STREAM_ORDER = 3
STREAM_AUX = 4  # DiffAugment draws and WGAN-GP interpolation weights
STREAM_EVAL = 5  # evaluation samples: seeded per step, so evaluating never moves another stream
STREAM_BN = 6  # latents that re-estimate the EMA generator's batch-norm statistics, seeded per step
STREAM_INTERPOLATION = 7  # the end points of the interpolation strip
BN_RECAL_BATCHES = 4
BN_RECAL_SIZE = 512
# Params that fix the shapes of the checkpointed models and optimizers.
ARCH_FIELDS = ("arch", "image_size", "nz", "ngf", "ndf", "spectral_norm", "loss", "conditional", "g_batchnorm", "pack")
# EMA warm-up: the decay at update t is min(ema, (1 + t) / (EMA_WARMUP + t)), so early weights fade quickly.
EMA_WARMUP = 10


GanGenerator = Generator | MLPGenerator | MultiScaleGenerator


Fakes = torch.Tensor | list[torch.Tensor]  # MSG: one image per scale


def stream_seed(seed: int, *stream: int) -> int:
    """A well-mixed 64-bit seed for one random stream of a run."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, np.uint64)[0])


class DataOrder:
    """Dataset indices for any step: one permutation per epoch, seeded by (seed, epoch); batches wrap epochs.

    The indices are on ``device`` (the data's), default CPU."""

    def __init__(self, *, size: int, batch_size: int, seed: int, device: torch.device | None = None) -> None:
        self._size = size
        self._batch_size = batch_size
        self._seed = seed
        self._device = device or torch.device("cpu")
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.int64)

    def _epoch_permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(stream_seed(self._seed, STREAM_ORDER, epoch))
            # Drawn on the CPU (the same order on every device), then copied once an epoch to where
            # the data lives, so a batch's indices never cost a blocking copy.
            self._permutation = to_device(torch.randperm(self._size, generator=generator), self._device)
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


def sample_shape(params: GanTrainParams, channels: int) -> tuple[int, ...]:
    return (2,) if params.points else (channels, params.image_size, params.image_size)


@dataclass
class Models:
    """Everything a checkpoint restores: nets, EMA generator, optimizers and random streams."""

    net_g: GanGenerator
    net_d: nn.Module
    ema_g: GanGenerator | None
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    noise: torch.Generator
    aux: torch.Generator

    @classmethod
    def create(cls, params: GanTrainParams, channels: int, device: torch.device, num_classes: int = 0) -> Models:
        """Fresh nets with the DCGAN/dense init, seeded by params.seed; initialised on CPU so every device agrees."""
        init = torch.Generator().manual_seed(stream_seed(params.seed, STREAM_INIT))
        shape = sample_shape(params, channels)
        net_g: GanGenerator
        net_d: nn.Module
        if params.arch == "mlp":
            net_g = MLPGenerator(
                nz=params.nz, ngf=params.ngf, out_shape=shape, tanh=not params.points, batchnorm=params.g_batchnorm
            )
            net_d = MLPDiscriminator(ndf=params.ndf, in_shape=shape, pack=params.pack)
        elif params.arch in MULTISCALE_ARCHS:
            net_g = MultiScaleGenerator(image_size=params.image_size, nz=params.nz, ngf=params.ngf, channels=channels)
            net_d = MultiScaleDiscriminator(
                image_size=params.image_size, ndf=params.ndf, channels=channels, msg=params.arch == MSG
            )
        else:
            net_g = Generator(
                image_size=params.image_size, nz=params.nz, ngf=params.ngf, channels=channels, num_classes=num_classes
            )
            # Spectral norm and the per-sample gradient penalty replace D's batch norm.
            batchnorm = not (params.spectral_norm or params.loss == losses.WGAN_GP)
            net_d = Discriminator(
                image_size=params.image_size,
                ndf=params.ndf,
                channels=channels,
                batchnorm=batchnorm,
                num_classes=num_classes,
                pack=params.pack,
                minibatch_std=params.minibatch_std,
            )
        net_g.apply(partial(weights_init, generator=init))
        net_d.apply(partial(weights_init, generator=init))
        if params.spectral_norm:
            add_spectral_norm(net_d, generator=init)
        ema_g = copy.deepcopy(net_g).eval().requires_grad_(False) if params.ema is not None else None
        net_g.to(device)
        net_d.to(device)
        if ema_g is not None:
            ema_g.to(device)
        betas = (params.beta1, params.beta2)
        fused = fused_adam(device)
        return cls(
            net_g=net_g,
            net_d=net_d,
            ema_g=ema_g,
            # Fused Adam on CUDA (one kernel, no host syncs); on CPU the default, whose results the
            # benchmarks and the bit-identical resume tests were recorded with.
            opt_g=torch.optim.Adam(net_g.parameters(), lr=params.lr_g, betas=betas, fused=fused),
            opt_d=torch.optim.Adam(net_d.parameters(), lr=params.lr_d, betas=betas, fused=fused),
            noise=torch.Generator(device=device).manual_seed(stream_seed(params.seed, STREAM_NOISE)),
            aux=torch.Generator(device=device).manual_seed(stream_seed(params.seed, STREAM_AUX)),
        )

    def update_ema(self, decay: float, step: int) -> None:
        """Move the EMA generator's weights towards G's (warm-up: a short memory early on)."""
        if self.ema_g is None:
            return
        weight = 1.0 - min(decay, (1 + step) / (EMA_WARMUP + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema_g.parameters()), list(self.net_g.parameters()), weight)

    def sampler_at(self, params: GanTrainParams, step: int) -> GanGenerator:
        """The generator to sample with after ``step``: G, or the EMA one with batch-norm statistics of its own.

        G's running statistics do not fit the averaged weights, so they are re-estimated on
        fresh latents from a stream seeded by (seed, step): deterministic, and no other stream moves.
        """
        if self.ema_g is None:
            return self.net_g
        norms = [m for m in self.ema_g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            device = next(self.ema_g.parameters()).device
            generator = torch.Generator(device=device).manual_seed(stream_seed(params.seed, STREAM_BN, step))
            momenta = [m.momentum for m in norms]
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None  # a cumulative average over the recalibration batches
            self.ema_g.train()
            with torch.no_grad():
                classes = getattr(self.ema_g, "num_classes", 0)
                labels = torch.arange(BN_RECAL_SIZE, device=device) % classes if classes else None
                for _ in range(BN_RECAL_BATCHES):
                    self.ema_g(torch.randn(BN_RECAL_SIZE, params.nz, 1, 1, generator=generator, device=device), labels)
            for norm, momentum in zip(norms, momenta, strict=True):
                norm.momentum = momentum
            self.ema_g.eval()
        return self.ema_g

    def checkpoint(self, step: int, params: GanTrainParams, metrics: dict[str, float], monitor: Monitor) -> bytes:
        """Serialise the state after ``step`` (tensors, dicts and primitives only: weights_only loadable)."""
        payload = {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "data_position": step * params.batch_size * params.n_critic,  # informative: order follows the step
            "netG": self.net_g.state_dict(),
            "netD": self.net_d.state_dict(),
            "optG": self.opt_g.state_dict(),
            "optD": self.opt_d.state_dict(),
            "rng": {"noise": self.noise.get_state(), "aux": self.aux.get_state()},
            "params": params.model_dump(),
            "metrics": dict(metrics),
            "monitor": monitor.state(),
        }
        if self.ema_g is not None:
            payload["netG_ema"] = self.ema_g.state_dict()
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    def restore(self, data: bytes, params: GanTrainParams) -> tuple[int, dict[str, float], Monitor]:
        """Load a checkpoint taken with the same architecture; returns (its step, its last metrics, its monitor)."""
        payload = load_versioned(data, version=CHECKPOINT_VERSION, what="checkpoint could not be loaded")
        saved = GanTrainParams.from_stored(payload["params"])
        mismatched = [f for f in ARCH_FIELDS if getattr(saved, f) != getattr(params, f)]
        if saved.resolved_channels() != params.resolved_channels():
            mismatched.append("channels")
        if (saved.ema is None) != (params.ema is None):
            mismatched.append("ema")
        if mismatched:
            raise ValueError(f"checkpoint was taken with different {', '.join(mismatched)}; cannot resume")
        self.net_g.load_state_dict(payload["netG"])
        self.net_d.load_state_dict(payload["netD"])
        if self.ema_g is not None:
            self.ema_g.load_state_dict(payload["netG_ema"])
        self.opt_g.load_state_dict(payload["optG"])
        self.opt_d.load_state_dict(payload["optD"])
        self.noise.set_state(payload["rng"]["noise"])
        if "aux" in payload["rng"]:
            self.aux.set_state(payload["rng"]["aux"])
        metrics = {k: float(v) for k, v in payload["metrics"].items()}
        return int(payload["step"]), metrics, Monitor.from_state(payload.get("monitor"))
