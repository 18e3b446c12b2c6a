"""The two-phase GAN training loop: D steps on real and fake samples, then a G step; the loss and remedies are params.

Pure PyTorch. Everything about where the job runs (metrics, checkpoints, artifacts,
warnings, cancellation) goes through ``hooks``. On CPU a run is deterministic, and a run
resumed from any checkpoint ends with weights bit-identical to an uninterrupted one: every
random stream is a dedicated ``torch.Generator``, and the data order is a function of the step.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.jobs.specs import GanTrainParams
from workers.gan import losses
from workers.gan.augment import diff_augment
from workers.gan.data import load_versioned, mixture
from workers.gan.features import ImageEvaluator
from workers.gan.metrics import EVAL_SAMPLES, diversity, mode_coverage
from workers.gan.multiscale import (
    MSG,
    MULTISCALE_ARCHS,
    PROGRESSIVE,
    MultiScaleDiscriminator,
    MultiScaleGenerator,
    Stage,
    progressive_stage,
)
from workers.gan.nets import (
    Discriminator,
    Generator,
    MLPDiscriminator,
    MLPGenerator,
    add_spectral_norm,
    num_stages,
    weights_init,
)
from workers.gan.plots import INTERPOLATION_ROWS, LossHistory, interpolation_png, loss_curve_png
from workers.gan.sample import generator_file, grid_png, latents, scatter_png
from workers.hooks import StopRequested, TrainHooks
from workers.training import (
    BINARY_CONTENT_TYPE,
    PLOT_KIND,
    PNG_CONTENT_TYPE,
    SAMPLE_KIND,
    WEIGHTS_KIND,
    DivergenceWatch,
    MetricLog,
    SpeedPath,
)

CHECKPOINT_VERSION = 1
FIXED_NOISE_COUNT = 64
EVAL_IMAGES = 1000  # generated images per image-quality evaluation (fd, kid, precision, recall)
EVAL_CHUNK = 250
MIN_CLASSES = 2
FIXED_POINTS_COUNT = 1000  # a point dataset's "grid" is a scatter plot of this many fixed-noise samples
REAL_LABEL = losses.REAL_LABEL
LOSS_NAMES = ("d_loss", "g_loss")
METRIC_NAMES = (*LOSS_NAMES, "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "lr_d", "lr_g", "d_skips")
DIVERSITY_METRIC = "diversity"  # at sample ticks: spread of the fixed-noise samples / spread of as many real ones
MODES_METRIC = "modes"
RESOLUTION_METRIC = "resolution"  # progressive and MSG runs: the resolution being trained
FADE_METRIC = "fade_alpha"  # ... and how far its fade-in has got (1: fully in)
HQ_METRIC = "hq_share"
SAMPLE_ARTIFACT = "samples/step-{step:07d}.png"
FINAL_SAMPLE_ARTIFACT = "samples/final.png"
INTERPOLATION_ARTIFACT = "samples/interpolation.png"  # rows of slerp walks between seeded latents
LOSS_PLOT_ARTIFACT = "plots/losses.png"
GENERATOR_ARTIFACT = "generator.pt"
DIVERGED = "training"
DIVERGED_ADVICE = "try lower learning rates"
# Independent random streams, each seeded from (params.seed, stream[, epoch]). The fixed
# noise of the sample grids is seeded by params.seed itself, as in sample.sample().
_STREAM_INIT = 1
_STREAM_NOISE = 2
_STREAM_ORDER = 3
_STREAM_AUX = 4  # DiffAugment draws and WGAN-GP interpolation weights
_STREAM_EVAL = 5  # evaluation samples: seeded per step, so evaluating never moves another stream
_STREAM_BN = 6  # latents that re-estimate the EMA generator's batch-norm statistics, seeded per step
_STREAM_INTERPOLATION = 7  # the end points of the interpolation strip
BN_RECAL_BATCHES = 4
BN_RECAL_SIZE = 512
# Params that fix the shapes of the checkpointed models and optimizers.
_ARCH_FIELDS = ("arch", "image_size", "nz", "ngf", "ndf", "spectral_norm", "loss", "conditional", "g_batchnorm", "pack")
_IMAGE_RANGE = (-1.0, 1.0)
# EMA warm-up: the decay at update t is min(ema, (1 + t) / (EMA_WARMUP + t)), so early weights fade quickly.
EMA_WARMUP = 10
# Health warnings.
D_WON_LOSS = 0.05  # bce/hinge: D's loss below this means it tells real from fake almost perfectly
D_WON_STEPS = 200  # ... for this many steps in a row
COLLAPSE_DIVERSITY = 0.2  # samples spread less than this share of the data's spread
COLLAPSE_MODES = 0.5  # point datasets: fewer than this share of the modes captured
# No collapse warnings before this many steps, nor in the first quarter of a run: early samples are still forming.
WARN_AFTER = 0.25
WARN_MIN_STEP = 200
D_WON_WARNING = (
    "D has won: its loss stayed below {loss} from step {start} to step {step}; G gets little signal. "
    "Try a lower lr_d, d_skip_threshold, label_smoothing or the stable preset"
)
COLLAPSE_WARNING = "possible mode collapse at step {step}: {detail}. Try the stable preset, spectral_norm or ema"


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


def _report_step(
    params: GanTrainParams,
    hooks: TrainHooks,
    monitor: _Monitor,
    step: int,
    metrics: dict[str, float],
    stage: Stage | None,
) -> None:
    """One flushed step: the loss plot's history, the metrics, the stage, and the D-won watch."""
    monitor.history.add(step, [metrics[name] for name in LOSS_NAMES])
    hooks.report_metrics(step, metrics)
    if stage is not None:
        hooks.report_metrics(step, {RESOLUTION_METRIC: float(stage.resolution()), FADE_METRIC: stage.alpha})
    _watch_d(params, monitor, hooks, step, metrics["d_loss"])


GanGenerator = Generator | MLPGenerator | MultiScaleGenerator
Fakes = torch.Tensor | list[torch.Tensor]  # MSG: one image per scale


@dataclass
class _Monitor:
    """Run-health state carried across steps (and checkpoints): D skips, the D-won streak, warnings given."""

    d_skips: int = 0
    d_won_since: int = 0  # first logged step of the current streak of tiny D losses; 0: none
    warned: list[str] = field(default_factory=list)
    history: LossHistory = field(default_factory=lambda: LossHistory(LOSS_NAMES))  # for plots/losses.png

    def state(self) -> dict[str, Any]:
        """Checkpointable form."""
        return {
            "d_skips": self.d_skips,
            "d_won_since": self.d_won_since,
            "warned": list(self.warned),
            "history": self.history.state(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> _Monitor:
        """Rebuild from ``state`` (None: a fresh monitor)."""
        if not state:
            return cls()
        return cls(
            int(state["d_skips"]),
            int(state["d_won_since"]),
            [str(w) for w in state["warned"]],
            LossHistory.from_state(LOSS_NAMES, state.get("history")),
        )

    def warn_once(self, hooks: TrainHooks, kind: str, message: str) -> None:
        """Send a warning of ``kind`` the first time only."""
        if kind not in self.warned:
            self.warned.append(kind)
            hooks.warn(message)


def _sample_shape(params: GanTrainParams, channels: int) -> tuple[int, ...]:
    return (2,) if params.points else (channels, params.image_size, params.image_size)


@dataclass
class _Models:
    """Everything a checkpoint restores: nets, EMA generator, optimizers and random streams."""

    net_g: GanGenerator
    net_d: nn.Module
    ema_g: GanGenerator | None
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam
    noise: torch.Generator
    aux: torch.Generator

    @classmethod
    def create(cls, params: GanTrainParams, channels: int, device: torch.device, num_classes: int = 0) -> _Models:
        """Fresh nets with the DCGAN/dense init, seeded by params.seed; initialised on CPU so every device agrees."""
        init = torch.Generator().manual_seed(_stream_seed(params.seed, _STREAM_INIT))
        shape = _sample_shape(params, channels)
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
        fused = True if device.type == "cuda" else None
        return cls(
            net_g=net_g,
            net_d=net_d,
            ema_g=ema_g,
            # Fused Adam on CUDA (one kernel, no host syncs); on CPU the default, whose results the
            # benchmarks and the bit-identical resume tests were recorded with.
            opt_g=torch.optim.Adam(net_g.parameters(), lr=params.lr_g, betas=betas, fused=fused),
            opt_d=torch.optim.Adam(net_d.parameters(), lr=params.lr_d, betas=betas, fused=fused),
            noise=torch.Generator(device=device).manual_seed(_stream_seed(params.seed, _STREAM_NOISE)),
            aux=torch.Generator(device=device).manual_seed(_stream_seed(params.seed, _STREAM_AUX)),
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
            generator = torch.Generator(device=device).manual_seed(_stream_seed(params.seed, _STREAM_BN, step))
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

    def checkpoint(self, step: int, params: GanTrainParams, metrics: dict[str, float], monitor: _Monitor) -> bytes:
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

    def restore(self, data: bytes, params: GanTrainParams) -> tuple[int, dict[str, float], _Monitor]:
        """Load a checkpoint taken with the same architecture; returns (its step, its last metrics, its monitor)."""
        payload = load_versioned(data, version=CHECKPOINT_VERSION, what="checkpoint could not be loaded")
        saved = GanTrainParams.from_stored(payload["params"])
        mismatched = [f for f in _ARCH_FIELDS if getattr(saved, f) != getattr(params, f)]
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
        return int(payload["step"]), metrics, _Monitor.from_state(payload.get("monitor"))


def _check_data(params: GanTrainParams, channels: int, data: torch.Tensor) -> None:
    expected = _sample_shape(params, channels)
    if data.ndim != len(expected) + 1 or tuple(data.shape[1:]) != expected or data.shape[0] == 0:
        raise ValueError(f"data must have shape (N>0, {', '.join(map(str, expected))}), got {tuple(data.shape)}")
    if not data.is_floating_point():
        what = "finite" if params.points else "in [-1, 1]"
        raise ValueError(f"data must be floating point {what}, got {data.dtype}")
    if params.points:
        if not bool(torch.isfinite(data).all()):
            raise ValueError("data values must be finite")
        return
    low, high = _IMAGE_RANGE
    if not bool(((data >= low) & (data <= high)).all()):  # also rejects NaN
        raise ValueError("data values must lie in [-1, 1]")


def _set_stage(params: GanTrainParams, models: _Models, step: int) -> Stage | None:
    """The multi-scale stage of ``step`` (progressive: growing; MSG: every scale at once), set on the nets."""
    if params.arch == MSG:
        return Stage(num_stages(params.image_size), 1.0)
    if params.arch != PROGRESSIVE:
        return None
    stage = progressive_stage(step, params.steps, params.image_size)
    for net in (models.net_g, models.net_d, models.ema_g):
        if isinstance(net, MultiScaleGenerator | MultiScaleDiscriminator):
            net.set_stage(stage)
    return stage


def _detached(fake: Fakes) -> Fakes:
    return [f.detach() for f in fake] if isinstance(fake, list) else fake.detach()


def _check_labels(params: GanTrainParams, data: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> int:
    """The class count a conditional run uses (0 when not conditional); ValueError if the labels don't fit."""
    if not params.conditional:
        return 0
    if labels is None or num_classes < MIN_CLASSES:
        raise ValueError(f"conditional training needs a dataset with at least {MIN_CLASSES} classes")
    if labels.shape != (data.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be int64 of shape ({data.shape[0]},), got {labels.dtype} {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0 .. {num_classes - 1}")
    return num_classes


def _generate(net: GanGenerator, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Samples in eval mode; consumes no random state and leaves BN statistics alone."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return net(z, labels)
    finally:
        net.train(was_training)


def _picture(params: GanTrainParams, samples: torch.Tensor, nrow: int | None = None) -> bytes:
    """A PNG of fixed-noise samples: an image grid (``nrow`` per row), or a scatter plot over the modes for points."""
    if params.points:
        return scatter_png(samples, centers=mixture(params.dataset).centers)
    return grid_png(samples, nrow=nrow)


def _grad_norm(net: nn.Module) -> torch.Tensor:
    """L2 norm of all of ``net``'s gradients (0 when it has none), without a host sync."""
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _learning_rates(params: GanTrainParams, step: int) -> tuple[float, float]:
    """(lr_d, lr_g) for ``step``: constant, or falling linearly from the set rates to zero at the end."""
    if params.lr_decay == "linear":
        scale = 1.0 - (step - 1) / params.steps
        return params.lr_d * scale, params.lr_g * scale
    return params.lr_d, params.lr_g


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _augment(params: GanTrainParams, x: Fakes, generator: torch.Generator) -> Fakes:
    if not params.diffaugment:
        return x
    if isinstance(x, list):  # GanTrainParams refuses DiffAugment with MSG
        raise ValueError("DiffAugment applies to single-scale images")
    return diff_augment(x, params.diffaugment, generator=generator)


def _single_scale(fake: Fakes) -> torch.Tensor:
    if isinstance(fake, list):  # GanTrainParams refuses gradient penalties with MSG
        raise ValueError("this loss needs single-scale fakes")
    return fake


def _may_warn(params: GanTrainParams, step: int) -> bool:
    """Whether a run is far enough along for collapse warnings."""
    return step >= max(WARN_MIN_STEP, WARN_AFTER * params.steps)


def _watch_d(params: GanTrainParams, monitor: _Monitor, hooks: TrainHooks, step: int, d_loss: float) -> None:
    """Warn once when D's loss stays near zero for D_WON_STEPS steps (bce and hinge only)."""
    if params.loss == losses.WGAN_GP:
        return
    if d_loss >= D_WON_LOSS:
        monitor.d_won_since = 0
        return
    if not monitor.d_won_since:
        monitor.d_won_since = step
    if step - monitor.d_won_since >= D_WON_STEPS:
        message = D_WON_WARNING.format(loss=D_WON_LOSS, start=monitor.d_won_since, step=step)
        monitor.warn_once(hooks, "d_won", message)


def train(
    params: GanTrainParams,
    data: torch.Tensor,
    hooks: TrainHooks,
    *,
    device: torch.device | str = "cpu",
    labels: torch.Tensor | None = None,
    num_classes: int = 0,
    evaluator: ImageEvaluator | None = None,
) -> dict[str, int | float]:
    """Train a GAN on ``data`` ((N, C, H, W) in [-1, 1], or (N, 2) points), resuming from the hooks' checkpoint.

    With ``params.conditional``, ``labels`` (N,) holds each image's class in 0 .. num_classes - 1.
    ``evaluator`` scores image samples (fd, kid, precision, recall) at evaluation ticks; point
    datasets are always scored by mode coverage.
    """
    device = torch.device(device)
    channels = params.resolved_channels()
    _check_data(params, channels, data)
    classes = _check_labels(params, data, labels, num_classes)
    batch_size = params.batch_size

    # ---- Set up: nets, optimizers, random streams; resume if a checkpoint exists ----
    speed = SpeedPath.of(params.precision, device)
    models = _Models.create(params, channels, device, num_classes=classes)
    if speed.channels_last and params.arch != "mlp":
        for net in (models.net_g, models.net_d, models.ema_g):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    net_g, net_d, opt_g, opt_d = models.net_g, models.net_d, models.opt_g, models.opt_d
    done = 0
    metrics: dict[str, float] = {}
    monitor = _Monitor()
    checkpoint = hooks.load_checkpoint()
    if checkpoint is not None:
        done, metrics, monitor = models.restore(checkpoint, params)
    if data.shape[0] < batch_size:
        hooks.warn(f"the dataset has {data.shape[0]} images, fewer than batch_size {batch_size}: batches repeat images")
    order = _DataOrder(size=data.shape[0], batch_size=batch_size, seed=params.seed)
    fixed_count = FIXED_POINTS_COUNT if params.points else FIXED_NOISE_COUNT
    # Conditional grids: one row per class, as many columns as fit in FIXED_NOISE_COUNT.
    per_row = max(1, FIXED_NOISE_COUNT // classes) if classes else None
    fixed_labels = torch.arange(classes * per_row, device=device) // per_row if classes and per_row else None
    if fixed_labels is not None:
        fixed_count = fixed_labels.shape[0]
    fixed_noise = latents(fixed_count, params.nz, seed=params.seed).to(device)
    reference = data.index_select(
        0, _DataOrder(size=data.shape[0], batch_size=fixed_count, seed=params.seed).indices(1).to(data.device)
    )
    data_spread = diversity(reference)
    real_target = REAL_LABEL - params.label_smoothing
    skip_below = params.d_skip_threshold
    eval_every = params.resolved_eval_every()
    watch = DivergenceWatch(LOSS_NAMES, device, what=DIVERGED, advice=DIVERGED_ADVICE)
    metric_log: MetricLog[Stage | None] = MetricLog(
        METRIC_NAMES, watch, partial(_report_step, params, hooks, monitor), last=metrics
    )
    picture: tuple[int, bytes] | None = None
    net_g.train()
    net_d.train()

    for step in range(done + 1, params.steps + 1):
        last = step == params.steps
        log = step % params.log_every == 0 or last
        grad_norm_d = torch.zeros(())
        stage = _set_stage(params, models, step)
        lr_d, lr_g = _learning_rates(params, step)
        _set_lr(opt_d, lr_d)
        _set_lr(opt_g, lr_g)

        # ---- D steps (n_critic of them): minimise D's loss on real and fake samples ----
        for critic in range(params.n_critic):
            update = (step - 1) * params.n_critic + critic + 1
            batch_index = order.indices(update).to(data.device)
            real = data.index_select(0, batch_index).to(device, non_blocking=True)
            # Conditional: the fakes of this step are asked for the real batch's classes.
            batch_labels = labels.index_select(0, batch_index).to(device) if classes and labels is not None else None
            final_critic = critic == params.n_critic - 1
            net_d.zero_grad(set_to_none=True)
            if params.r1_gamma:
                real.requires_grad_(True)
            if speed.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            z = torch.randn(batch_size, params.nz, 1, 1, generator=models.noise, device=device)
            with speed.autocast():
                out_real = net_d(_augment(params, real, models.aux), batch_labels)
                with torch.set_grad_enabled(final_critic):  # only the last fakes feed the G step
                    # MSG: G's image at every scale, so D's gradient reaches each of G's outputs
                    fake = (
                        net_g.pyramid(z)
                        if isinstance(net_g, MultiScaleGenerator) and params.arch == MSG
                        else net_g(z, batch_labels)
                    )
                out_fake = net_d(_augment(params, _detached(fake), models.aux), batch_labels)
            d_loss = losses.d_loss(params.loss, out_real.float(), out_fake.float(), real_target=real_target)
            if skip_below is not None and float(d_loss) < skip_below:
                monitor.d_skips += 1  # the lesson's remedy: let G catch up while D is far ahead
                continue
            total = d_loss
            if params.loss == losses.WGAN_GP:
                critic_fn = partial(_augment_then, net_d, params, models.aux, batch_labels)
                total = total + losses.gradient_penalty(
                    critic_fn, real, _single_scale(fake), generator=models.aux, pack=params.pack
                )
            if params.r1_gamma:
                total = total + losses.r1_penalty(out_real, real, gamma=params.r1_gamma)
            total.backward()
            if log and final_critic:
                grad_norm_d = _grad_norm(net_d)
            opt_d.step()

        # ---- G step: minimise G's loss through D, reusing the last D step's fakes ----
        net_g.zero_grad(set_to_none=True)
        net_d.requires_grad_(False)  # D's weight gradients are not needed here
        with speed.autocast():
            out_g = net_d(_augment(params, fake, models.aux), batch_labels)
        g_loss = losses.g_loss(params.loss, out_g.float())
        g_loss.backward()
        net_d.requires_grad_(True)
        grad_norm_g = _grad_norm(net_g) if log else torch.zeros(())
        opt_g.step()
        if params.ema is not None:
            models.update_ema(params.ema, step)
        watch.observe(step, torch.stack([d_loss.detach(), g_loss.detach()]))

        # ---- Report, sample, evaluate, checkpoint (in that order: a checkpoint marks the step complete) ----
        sample = step % params.sample_every == 0 or last
        evaluate = (params.points or evaluator is not None) and (step % eval_every == 0 or last)
        saved = step % params.checkpoint_every == 0 or last
        if log:
            with torch.no_grad():
                on_device = torch.stack(
                    [
                        d_loss.detach().float(),
                        g_loss.detach().float(),
                        losses.d_outputs(params.loss, out_real.detach()).float(),
                        losses.d_outputs(params.loss, out_fake.detach()).float(),
                        grad_norm_d.to(device).float(),
                        grad_norm_g.to(device).float(),
                    ]
                )
            metric_log.add(step, on_device, [lr_d, lr_g, float(monitor.d_skips)], stage)
        hooks.report_progress(step, params.steps)  # host-side bookkeeping, no sync
        if sample or saved or evaluate or metric_log.due():
            metric_log.flush()  # the only device sync of a step that does none of these
        metrics = metric_log.last
        if sample or evaluate:
            sampler = models.sampler_at(params, step)
        if sample:
            samples = _generate(sampler, fixed_noise, fixed_labels)
            picture = (step, _picture(params, samples, per_row))
            hooks.save_artifact(
                SAMPLE_ARTIFACT.format(step=step), picture[1], kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE
            )
            spread = diversity(samples) / data_spread if data_spread > 0 else 0.0
            hooks.report_metrics(step, {DIVERSITY_METRIC: spread})
            if spread < COLLAPSE_DIVERSITY and _may_warn(params, step):
                detail = f"the samples spread {spread:.0%} as much as the data"
                monitor.warn_once(hooks, "collapse", COLLAPSE_WARNING.format(step=step, detail=detail))
        if evaluate and params.points:
            _evaluate(params, sampler, monitor, hooks, step)
        elif evaluate and evaluator is not None:
            _evaluate_images(params, sampler, evaluator, hooks, step, classes)
        if saved:
            hooks.save_checkpoint(step, models.checkpoint(step, params, metrics, monitor))

        # ---- Cooperative stop: checkpoint this step, then leave ----
        reason = hooks.should_stop()
        if reason is not None:
            if not saved:
                metric_log.flush()
                metrics = metric_log.last
                hooks.save_checkpoint(step, models.checkpoint(step, params, metrics, monitor))
            raise StopRequested(reason, step)

    # ---- Final artifacts ----
    sampler = models.sampler_at(params, params.steps)
    if picture is not None and picture[0] == params.steps:
        final_png = picture[1]
    else:
        final_png = _picture(params, _generate(sampler, fixed_noise, fixed_labels), per_row)
    hooks.save_artifact(FINAL_SAMPLE_ARTIFACT, final_png, kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)
    hooks.save_artifact(
        LOSS_PLOT_ARTIFACT,
        loss_curve_png(monitor.history, title=f"d_loss and g_loss ({params.loss}), steps 1-{params.steps}"),
        kind=PLOT_KIND,
        content_type=PNG_CONTENT_TYPE,
    )
    if not params.points:
        rows = torch.arange(INTERPOLATION_ROWS) % classes if classes else None
        strip = interpolation_png(
            sampler, params.nz, seed=_stream_seed(params.seed, _STREAM_INTERPOLATION), device=device, labels=rows
        )
        hooks.save_artifact(INTERPOLATION_ARTIFACT, strip, kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)
    hooks.save_artifact(
        GENERATOR_ARTIFACT,
        generator_file(sampler, params.model_dump()),
        kind=WEIGHTS_KIND,
        content_type=BINARY_CONTENT_TYPE,
    )
    return {"steps": params.steps, "resumed_from": done, **metrics}


def _augment_then(
    net_d: nn.Module,
    params: GanTrainParams,
    generator: torch.Generator,
    labels: torch.Tensor | None,
    x: torch.Tensor,
) -> torch.Tensor:
    """D on the augmented input (of classes ``labels``): the critic the gradient penalty constrains."""
    out: torch.Tensor = net_d(_augment(params, x, generator), labels)
    return out


def _evaluate_images(
    params: GanTrainParams,
    sampler: GanGenerator,
    evaluator: ImageEvaluator,
    hooks: TrainHooks,
    step: int,
    classes: int,
) -> None:
    """FD, KID, precision and recall of EVAL_IMAGES fresh samples (own seeded stream), classes in turn."""
    seed = _stream_seed(params.seed, _STREAM_EVAL, step) % 2**63
    z = latents(EVAL_IMAGES, params.nz, seed=seed)
    device = next(sampler.parameters()).device
    wanted = torch.arange(EVAL_IMAGES) % classes if classes else None
    parts = []
    for start in range(0, EVAL_IMAGES, EVAL_CHUNK):
        chunk_labels = None if wanted is None else wanted[start : start + EVAL_CHUNK].to(device)
        parts.append(_generate(sampler, z[start : start + EVAL_CHUNK].to(device), chunk_labels))
    hooks.report_metrics(step, evaluator(torch.cat(parts), seed=seed))


def _evaluate(params: GanTrainParams, sampler: GanGenerator, monitor: _Monitor, hooks: TrainHooks, step: int) -> None:
    """Mode coverage of 2,500 fresh samples (own seeded stream): the modes and hq_share metrics."""
    z = latents(EVAL_SAMPLES, params.nz, seed=_stream_seed(params.seed, _STREAM_EVAL, step) % 2**63)
    device = next(sampler.parameters()).device
    coverage = mode_coverage(_generate(sampler, z.to(device)).cpu(), mixture(params.dataset))
    hooks.report_metrics(step, {MODES_METRIC: float(coverage.modes), HQ_METRIC: coverage.hq_share})
    if coverage.modes < COLLAPSE_MODES * coverage.total_modes and _may_warn(params, step):
        detail = f"{coverage.modes} of {coverage.total_modes} modes have samples"
        monitor.warn_once(hooks, "collapse", COLLAPSE_WARNING.format(step=step, detail=detail))
