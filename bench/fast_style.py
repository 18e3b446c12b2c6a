"""Fast style benchmark: style.train (method johnson) against pytorch/examples' fast_neural_style, and against Gatys.

Run as ``python -m bench.fast_style`` (``make bench-fast-style``). No database, no network: pure PyTorch
in this process, on the built-in pictures and the seeded random VGG16 (no ImageNet download).

The reference is the training loop of pytorch/examples ``fast_neural_style/neural_style/neural_style.py``
(https://github.com/pytorch/examples, commit 77f55b9, BSD-3-Clause), reimplemented here with its
``transformer_net.py`` (TransformerNet: reflection padding, affine instance norm, 5 residual blocks,
nearest-upsample-then-convolve, no output activation), ``vgg.py`` (Vgg16 as torchvision's VGG16
features cut into the slices relu1_2, relu2_2, relu3_3, relu4_3, in-place ReLUs) and ``utils.py``
(``gram_matrix`` divided by C*H*W, ``normalize_batch``: pixels 0-255 divided in place by 255, then the
ImageNet mean and std). Per iteration: the transformer on the batch, both batches normalised, VGG on the
output and on the input (all four slices, as the original), MSE content loss at relu2_2 (weight 1e5),
the sum of MSEs between Gram matrices and the style's (weight 1e10), backward, Adam (lr 1e-3) step, and
``.item()`` of both losses; the original's progress line is formatted every 500 batches of an epoch
(its ``--log-interval``; kept in a list, not printed). Its data is the original's transform (Resize(size), CenterCrop(size), ToTensor, x 255) over
the same content pictures as Atelier's (``builtin_content``), in a DataLoader (batch size, no shuffle,
no workers) cycled over epochs; unlike the original it drops the last partial batch, so every step
has ``batch_size`` images, and it reads decoded pictures from memory (no JPEG decoding). The style
picture is resized to the crop size (its ``--style-size``). Its VGG16 gets Atelier's seeded random
encoder weights (copied conv by conv), so both sides do equal work through equal networks.

Three measurements:

1. Training throughput: ``train_johnson`` (InMemoryHooks, metrics every step, no previews, no
   checkpoint, random VGG16, Johnson's default layers and network) against the reference, same device,
   batch size, crop size and torch threads. Each run trains ``--warmup`` + ``--steps`` steps; images/s
   counts the ``--steps`` after the warm-up (from the end of step ``warmup`` to the end of the last
   step: a hook timestamps Atelier's steps, the reference's loop its own; on CUDA the device is
   synchronised at both marks). Runs alternate (reference, Atelier, ...) ``--repeats`` times; each
   side's figure is the median. Target: ratio (Atelier / reference) >= 1.0. The work differs in two
   places: Atelier's content targets come from VGG16 cut after relu2_2 (the reference runs all four
   slices on the input), and Atelier adds a sigmoid and a total-variation term.
2. Apply speed-up (library level): ``stylize`` on one picture (astronaut, a held-out preview picture,
   ``--apply-size`` px), warm (the model loaded with ``load_model`` from the trained
   ``model.safetensors``; one untimed call first), median of ``--apply-repeats``; against the time
   Gatys (``run_transfer``: Adam lr 0.05 from the content, the same random VGG16, seed, layers and loss
   weights as the Johnson training) needs to reach the applied output's style loss on the same picture.
   Gatys' time runs from the start of its loop (encoder built, as the applied model is loaded) to the
   end of the fewest steps whose image scores at or below the applied output; its per-step style loss
   is its own metric, mapped onto the score below (checked on its first image); when it never gets there
   the speed-up printed is a lower bound (">"). On CUDA its steps are timestamped after a device sync
   each, which slows Gatys a little there. Target >= 100x. The job-level ``style.apply`` time (decode,
   forward, encode through the worker) is not this: it is measured separately.
3. Quality: the applied output's style loss against a ``--gatys-steps`` (300) Gatys result's on the
   same pair (content astronaut, style coffee), ratio Johnson / Gatys, with each output's SSIM to the
   content (``skimage.metrics.structural_similarity``). The Johnson network is trained for the bench
   with ``--train-steps`` steps at ``--train-size`` px. Target: within 2x (ratio <= 2.0). Gatys' score
   after 0, 10, 20, ... steps is printed too, and ``--out DIR`` saves both pictures.

The score is bench/style.py's reference loss code (the PyTorch tutorial's ``StyleLoss``: the MSE
between Gram matrices divided by C*H*W, and its ``Normalization``) inserted after Johnson's style layers
(relu1_2, relu2_2, relu3_3, relu4_3) of the same random VGG16: the unweighted sum over the layers, the
style picture at the apply size as the target. A second score, on bench/style.py's own tutorial model
(random VGG19, conv_1 ... conv_5, which neither side optimises), is printed for context.

The last three lines are the ratios, each with its target and PASS or FAIL. Exit status: 0 when everything
was measured; 1 with ``--strict`` when a target was missed; 3 when it could not measure (an error, or the
whole run over ``--timeout-s``: every loop checks the deadline once per step).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Final

import numpy as np
import torch
import torchvision
from PIL import Image
from skimage.metrics import structural_similarity
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench.machine import cpu_model
from bench.style import DEEPEST, _Normalization, _reference_model, _square, _StyleLoss
from shared.jobs.style_train import JOHNSON_STYLE_LAYERS, StyleTrainParams
from shared.jobs.style_transfer import StyleTransferParams
from workers.hooks import InMemoryHooks
from workers.style.content import ContentSet, builtin_content
from workers.style.images import load_builtin_image, to_png, to_tensor
from workers.style.johnson import MODEL_ARTIFACT, TransformerNet, load_model, stylize, train_johnson
from workers.style.transfer import run_transfer
from workers.style.vgg import Encoder, build_vgg, build_vgg19

CONTENT, STYLE = "astronaut", "coffee"  # astronaut is held out of builtin_content (a preview picture)
SEED = 0
NETWORK = "vgg16"
WEIGHTS = "random"
NEVER = 10**6  # a checkpoint interval no run reaches
# The reference's (pytorch/examples fast_neural_style) hyperparameters.
REFERENCE_SEED = 42
REFERENCE_LR = 1e-3
REFERENCE_CONTENT_WEIGHT = 1e5
REFERENCE_STYLE_WEIGHT = 1e10
REFERENCE_LOG_INTERVAL = 500  # batches of an epoch between progress lines (its --log-interval)
PIXEL_SCALE = 255.0  # the reference works on 0-255 pixels
VGG16_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23))  # torchvision features indices: relu1_2, relu2_2, relu3_3, relu4_3
# Gatys (style.transfer) on the same objective: Adam from the content image.
GATYS_OPTIMIZER = "adam"
GATYS_INIT = "content"
WARMUP_GATYS_STEPS = 2
CURVE_STEPS = (0, 10, 20, 30, 50, 100, 200)  # Gatys' score after this many steps is printed
# Targets.
THROUGHPUT_TARGET = 1.0  # Atelier images/s / reference images/s, at least
SPEED_UP_TARGET = 100.0  # Gatys seconds to the applied style loss / stylize seconds, at least
QUALITY_TARGET = 2.0  # Johnson style loss / Gatys style loss, at most
# Relative: Gatys' style metric against the score on its first image. On CUDA Gatys' encoder runs under
# bf16 autocast and the score in fp32: they differed by 1.1e-3 on an H200 (2026-11-30). A wrong
# scale or layer set is off by factors, far outside this.
MAP_TOLERANCE = 1e-2
EXIT_OK, EXIT_MISSED, EXIT_UNMEASURED = 0, 1, 3
OUT_JOHNSON, OUT_GATYS = "johnson.png", "gatys.png"  # --out


@dataclass(frozen=True)
class Config:
    """One benchmark run's sizes and schedules."""

    size: int  # training crops, throughput
    batch_size: int
    steps: int  # timed steps per throughput run
    warmup: int  # untimed steps before them, in the same run
    repeats: int
    train_steps: int  # the Johnson network for measurements 2 and 3
    train_size: int
    apply_size: int
    apply_repeats: int
    gatys_steps: int


DEFAULTS: Final = {
    # About 10 minutes on 2 CPU cores at 1 thread: the 300 Gatys steps at 256 px take half of it.
    "cpu": Config(
        size=128,
        batch_size=4,
        steps=5,
        warmup=1,
        repeats=3,
        train_steps=120,
        train_size=128,
        apply_size=256,
        apply_repeats=5,
        gatys_steps=300,
    ),
    # The reference's own defaults (256 px, batch 4) and a network trained long enough to style.
    "cuda": Config(
        size=256,
        batch_size=4,
        steps=100,
        warmup=10,
        repeats=3,
        train_steps=2000,
        train_size=256,
        apply_size=256,
        apply_repeats=20,
        gatys_steps=300,
    ),
}
DEFAULT_THREADS = 1
DEFAULT_TIMEOUT_S = 3600


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeadlineExceeded(RuntimeError):
    """The benchmark ran over its time budget (``--timeout-s``)."""


@dataclass(frozen=True)
class Deadline:
    """A monotonic point in time that every loop of the benchmark checks once per step."""

    at: float = float("inf")

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    def expired(self) -> bool:
        """Whether the time is up."""
        return time.monotonic() >= self.at

    def check(self, what: str) -> None:
        """Raise DeadlineExceeded when the time is up."""
        if self.expired():
            raise DeadlineExceeded(f"over the time budget during {what}")


NO_DEADLINE: Final = Deadline()
STOP_DEADLINE: Final = "deadline"


# -- The reference: pytorch/examples fast_neural_style, reimplemented ----------------------------


class RefConvLayer(nn.Module):
    """transformer_net.py's ConvLayer: reflection padding, then a convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad, convolve."""
        return self.conv2d(self.reflection_pad(x))


class RefResidualBlock(nn.Module):
    """transformer_net.py's ResidualBlock."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = RefConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + IN(conv(ReLU(IN(conv(x)))))."""
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class RefUpsampleConvLayer(nn.Module):
    """transformer_net.py's UpsampleConvLayer: nearest upsampling, reflection padding, a convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample, pad, convolve."""
        x = nn.functional.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class RefTransformerNet(nn.Module):
    """transformer_net.py's TransformerNet (width 32, 5 residual blocks), torch's default init."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = RefConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = RefConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = RefConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res = nn.Sequential(*(RefResidualBlock(128) for _ in range(5)))
        self.deconv1 = RefUpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = RefUpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = RefConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The styled batch, unbounded (about 0-255)."""
        y = self.relu(self.in1(self.conv1(x)))  # B x 32 x H x W
        y = self.relu(self.in2(self.conv2(y)))  # B x 64 x H/2 x W/2
        y = self.relu(self.in3(self.conv3(y)))  # B x 128 x H/4 x W/4
        y = self.res(y)  # B x 128 x H/4 x W/4
        y = self.relu(self.in4(self.deconv1(y)))  # B x 64 x H/2 x W/2
        y = self.relu(self.in5(self.deconv2(y)))  # B x 32 x H x W
        return self.deconv3(y)  # B x 3 x H x W


class RefVgg16(nn.Module):
    """vgg.py's Vgg16: torchvision's VGG16 features in four slices, frozen; the weights are ``features``'."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.slices = nn.ModuleList(
            nn.Sequential(*(features[i] for i in range(start, stop))) for start, stop in VGG16_SLICES
        )
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[relu1_2, relu2_2, relu3_3, relu4_3]."""
        outputs = []
        for part in self.slices:
            x = part(x)
            outputs.append(x)
        return outputs


def reference_vgg(encoder: Encoder) -> RefVgg16:
    """The reference's Vgg16 (torchvision's modules, in-place ReLUs) with ``encoder``'s conv weights."""
    with torch.device("meta"):  # no time spent on an init that is overwritten (or, past relu4_3, unused)
        features = torchvision.models.vgg16(weights=None).features
    features = features.to_empty(device="cpu")
    body = list(encoder.body.children())
    if len(body) < VGG16_SLICES[-1][1]:
        raise ValueError(f"the encoder stops at module {len(body)}, before relu4_3")
    with torch.no_grad():
        for index, module in enumerate(body[: VGG16_SLICES[-1][1]]):
            if isinstance(module, nn.Conv2d):
                target = features[index]
                if not isinstance(target, nn.Conv2d) or target.weight.shape != module.weight.shape:
                    raise ValueError(f"torchvision's VGG16 features[{index}] does not fit the encoder's {module}")
                target.weight.copy_(module.weight)
                if target.bias is not None and module.bias is not None:
                    target.bias.copy_(module.bias)
    return RefVgg16(features)


def ref_gram_matrix(y: torch.Tensor) -> torch.Tensor:
    """utils.py's gram_matrix: (B, C, C), divided by C * H * W."""
    b, ch, h, w = y.size()
    features = y.view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def ref_normalize_batch(batch: torch.Tensor) -> torch.Tensor:
    """utils.py's normalize_batch: divides ``batch`` by 255 in place, then the ImageNet mean and std."""
    mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
    std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
    batch = batch.div_(PIXEL_SCALE)
    return (batch - mean) / std


class _Pictures(Dataset[tuple[torch.Tensor, int]]):
    """The content pictures through the reference's transform (an ImageFolder of one class, in memory)."""

    def __init__(self, pictures: Sequence[Image.Image], size: int) -> None:
        self.pictures = list(pictures)
        self.transform = transforms.Compose(
            [
                transforms.Resize(size),
                transforms.CenterCrop(size),
                transforms.ToTensor(),
                transforms.Lambda(lambda x: x.mul(PIXEL_SCALE)),
            ]
        )

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.pictures[index]), 0


@dataclass
class Run:
    """One timed training run of one side: images/s over the steps after the warm-up."""

    side: str
    images: int  # trained in the timed window
    seconds: float  # the timed window
    total_seconds: float  # the whole call, set-up included
    losses: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """Images per second in the timed window."""
        return self.images / self.seconds


def run_reference(
    pictures: Sequence[Image.Image],
    style: Image.Image,
    vgg: RefVgg16,
    config: Config,
    device: torch.device,
    deadline: Deadline = NO_DEADLINE,
) -> Run:
    """The reference's ``train`` for ``warmup + steps`` batches; timed over the last ``steps``."""
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(REFERENCE_SEED)
        loader = DataLoader(
            _cycled(pictures, config.batch_size, config.size), batch_size=config.batch_size, drop_last=True
        )
        transformer = RefTransformerNet().to(device)
        optimizer = torch.optim.Adam(transformer.parameters(), REFERENCE_LR)
        mse_loss = nn.MSELoss()
        vgg = vgg.to(device)
        style_tensor = transforms.ToTensor()(
            style.convert("RGB").resize((config.size, config.size), Image.Resampling.LANCZOS)
        )
        style_batch = style_tensor.mul(PIXEL_SCALE).repeat(config.batch_size, 1, 1, 1).to(device)
        gram_style = [ref_gram_matrix(y) for y in vgg(ref_normalize_batch(style_batch))]

        total = config.warmup + config.steps
        done = 0
        log: list[str] = []
        marks: dict[int, float] = {}
        while done < total:  # epochs
            transformer.train()
            agg_content_loss = agg_style_loss = 0.0
            count = 0
            for batch_id, (x, _) in enumerate(loader):
                n_batch = len(x)
                count += n_batch
                optimizer.zero_grad()
                x = x.to(device)
                y = transformer(x)
                y = ref_normalize_batch(y)
                x = ref_normalize_batch(x)
                features_y = vgg(y)
                features_x = vgg(x)
                content_loss = REFERENCE_CONTENT_WEIGHT * mse_loss(features_y[1], features_x[1])
                style_loss = torch.zeros((), device=device)
                for ft_y, gm_s in zip(features_y, gram_style, strict=True):
                    style_loss = style_loss + mse_loss(ref_gram_matrix(ft_y), gm_s[:n_batch, :, :])
                style_loss = style_loss * REFERENCE_STYLE_WEIGHT
                total_loss = content_loss + style_loss
                total_loss.backward()
                optimizer.step()
                agg_content_loss += content_loss.item()
                agg_style_loss += style_loss.item()
                if (batch_id + 1) % REFERENCE_LOG_INTERVAL == 0:
                    log.append(
                        f"{time.ctime()}\t[{count}/{len(loader.dataset)}]\tcontent: "
                        f"{agg_content_loss / (batch_id + 1):.6f}\tstyle: {agg_style_loss / (batch_id + 1):.6f}"
                    )
                done += 1
                if done in (config.warmup, total):
                    sync(device)
                    marks[done] = time.perf_counter()
                if done == total:
                    break
                deadline.check("the reference's training")
    return Run(
        side="reference",
        images=config.steps * config.batch_size,
        seconds=marks[total] - marks[config.warmup],
        total_seconds=time.perf_counter() - started,
        losses={"content": content_loss.item(), "style": style_loss.item()},
    )


def _cycled(pictures: Sequence[Image.Image], batch_size: int, size: int) -> _Pictures:
    """The pictures, repeated so that one full batch fits (the loader drops the partial one)."""
    repeat = -(-batch_size // len(pictures))
    return _Pictures(list(pictures) * repeat, size)


# -- Atelier: train_johnson -----------------------------------------------------------------------


@dataclass
class TimedHooks(InMemoryHooks):
    """InMemoryHooks that timestamp chosen steps (after the device finished them) and the loop's start."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    timed_steps: frozenset[int] = frozenset()
    marks: dict[int, float] = field(default_factory=dict)
    loop_started: float = 0.0
    deadline: Deadline = NO_DEADLINE

    def report_progress(self, step: int, total: int) -> None:
        """Remember the progress; timestamp the chosen steps."""
        super().report_progress(step, total)
        if step in self.timed_steps:
            sync(self.device)
            self.marks[step] = time.perf_counter()

    def load_checkpoint(self) -> bytes | None:
        """Called once the loss network is built, just before the loop: the loop's start."""
        self.loop_started = time.perf_counter()
        return super().load_checkpoint()

    def should_stop(self) -> str | None:
        """Stop (the loop raises StopRequested) once the deadline has passed."""
        return STOP_DEADLINE if self.deadline.expired() else super().should_stop()


def johnson_params(*, size: int, batch_size: int, steps: int) -> StyleTrainParams:
    """style.train on the benchmark's style: defaults but random VGG16 weights, no previews, no checkpoints."""
    return StyleTrainParams(
        styles=[STYLE],
        size=size,
        batch_size=batch_size,
        steps=steps,
        weights=WEIGHTS,
        network=NETWORK,
        seed=SEED,
        preview_every=None,
        checkpoint_every=NEVER,
    )


def run_atelier(
    content: ContentSet, style: Image.Image, config: Config, device: torch.device, deadline: Deadline = NO_DEADLINE
) -> Run:
    """``train_johnson`` for ``warmup + steps`` steps; timed over the last ``steps``."""
    total = config.warmup + config.steps
    params = johnson_params(size=config.size, batch_size=config.batch_size, steps=total)
    hooks = TimedHooks(device=device, timed_steps=frozenset({config.warmup, total}), deadline=deadline)
    started = time.perf_counter()
    summary = train_johnson(params, content, [style], hooks, device=device)
    sync(device)
    final = summary["final_metrics"]
    return Run(
        side="atelier",
        images=config.steps * config.batch_size,
        seconds=hooks.marks[total] - hooks.marks[config.warmup],
        total_seconds=time.perf_counter() - started,
        losses={"content": float(final["content_loss"]), "style": float(final["style_loss"])},
    )


def measure_throughput(
    content: ContentSet,
    style: Image.Image,
    encoder: Encoder,
    config: Config,
    device: torch.device,
    deadline: Deadline = NO_DEADLINE,
) -> tuple[list[Run], list[Run]]:
    """``repeats`` alternating (reference, Atelier) runs."""
    vgg = reference_vgg(encoder)
    references: list[Run] = []
    ateliers: list[Run] = []
    for index in range(config.repeats):
        references.append(run_reference(content.pictures, style, vgg, config, device, deadline))
        ateliers.append(run_atelier(content, style, config, device, deadline))
        print(
            f"throughput run {index + 1}/{config.repeats}: {_describe(references[-1])}; {_describe(ateliers[-1])}",
            flush=True,
        )
    return references, ateliers


def _describe(run: Run) -> str:
    return (
        f"{run.side} {run.images} images in {run.seconds:.2f} s = {run.images_per_s:.2f} images/s "
        f"(whole call {run.total_seconds:.1f} s)"
    )


# -- The score: bench/style.py's loss code on Johnson's style layers ------------------------------


class StyleScore:
    """bench/style.py's StyleLoss modules after ``layers`` of ``encoder``'s VGG: the unweighted sum of Gram MSEs."""

    def __init__(self, encoder: Encoder, style: torch.Tensor, layers: Sequence[str]) -> None:
        device = style.device
        self.model = nn.Sequential(_Normalization().to(device))
        self.losses: list[_StyleLoss] = []
        wanted = set(layers)
        for name, module in encoder.body.named_children():
            self.model.add_module(name, module)
            if name in wanted:
                with torch.no_grad():
                    loss = _StyleLoss(self.model(style))
                self.model.add_module(f"style_loss_{name}", loss)
                self.losses.append(loss)
                wanted.discard(name)
                if not wanted:
                    break
        if wanted:
            raise ValueError(f"layers {sorted(wanted)} are not in the encoder")

    def __call__(self, image: torch.Tensor) -> float:
        """The score of one image (1, 3, H, W) in [0, 1]."""
        with torch.no_grad():
            self.model(image)
            return float(sum(float(loss.loss) for loss in self.losses))


class JudgeScore:
    """bench/style.py's tutorial model (random VGG19, conv_1 ... conv_5): its style losses' sum, unweighted.

    The tutorial's model needs content and style of one shape: the style is its centre square at the content's size.
    """

    def __init__(self, content: torch.Tensor, style: Image.Image) -> None:
        cnn = build_vgg19(WEIGHTS, seed=SEED, layers=[DEEPEST]).body.to(content.device)
        square = to_tensor(_square(style), max(content.shape[-2:])).to(content.device)
        self.reference = _reference_model(cnn, content, square)

    def __call__(self, image: torch.Tensor) -> float:
        """The score of one image (1, 3, H, W) in [0, 1]."""
        with torch.no_grad():
            self.reference.model(image)
            return float(sum(float(loss.loss) for loss in self.reference.style_losses))


def ssim(image: torch.Tensor, content: torch.Tensor) -> float:
    """The SSIM of two images (1, 3, H, W) in [0, 1] (skimage, channel_axis last)."""
    a, b = (t.detach().float().cpu()[0].permute(1, 2, 0).numpy().astype(np.float64) for t in (image, content))
    return float(structural_similarity(a, b, channel_axis=2, data_range=1.0))


# -- Apply speed-up and quality -------------------------------------------------------------------


@dataclass
class Gatys:
    """A Gatys run: its per-step style metric and times, its final image and the metric-to-score scale."""

    image: torch.Tensor
    metrics: list[float]  # style_loss at step k: the image after k - 1 steps
    step_ends: list[float]  # seconds from the loop's start to the end of step k
    setup_seconds: float  # the call's start to the loop's (encoder built)
    scale: float  # style_loss metric / score

    def steps_to(self, score: float) -> int | None:
        """The fewest steps whose image scores at or below ``score``; None when no step's did."""
        for index, metric in enumerate(self.metrics):
            if metric / self.scale <= score:
                return index  # the metric of step index + 1 measures the image after index steps
        return None

    def seconds_to(self, steps: int) -> float:
        """Seconds from the loop's start to the end of ``steps`` steps."""
        return self.step_ends[steps - 1] if steps else 0.0

    def curve(self) -> list[tuple[int, float, float]]:
        """(steps done, score, seconds) at CURVE_STEPS below the run's length."""
        return [(k, self.metrics[k] / self.scale, self.seconds_to(k)) for k in CURVE_STEPS if k < len(self.metrics)]


def gatys_params(johnson: StyleTrainParams, *, size: int, steps: int) -> StyleTransferParams:
    """style.transfer on the Johnson training's objective (network, weights, layers, loss weights), Adam."""
    return StyleTransferParams(
        content=CONTENT,
        styles=[STYLE],
        size=size,
        steps=steps,
        weights=johnson.weights,
        network=johnson.network,
        pooling=johnson.pooling,
        content_layers=list(johnson.content_layers),
        style_layers=list(johnson.style_layers),
        style_layer_weights=johnson.style_layer_weights,
        content_weight=johnson.content_weight,
        style_weight=johnson.style_weight,
        tv_weight=johnson.tv_weight,
        optimizer=GATYS_OPTIMIZER,
        init=GATYS_INIT,
        seed=johnson.seed,
        log_every=1,
        checkpoint_every=NEVER,
    )


def run_gatys(
    params: StyleTransferParams,
    content: Image.Image,
    style: Image.Image,
    score: StyleScore,
    content_tensor: torch.Tensor,
    device: torch.device,
    deadline: Deadline = NO_DEADLINE,
) -> Gatys:
    """One warm-up run, then the measured one; its style metric is checked against the score on step 1's image."""
    warm = params.model_copy(update={"steps": WARMUP_GATYS_STEPS})
    run_transfer(warm, content, [style], TimedHooks(deadline=deadline), device=device)
    hooks = TimedHooks(device=device, timed_steps=frozenset(range(1, params.steps + 1)), deadline=deadline)
    started = time.perf_counter()
    result = run_transfer(params, content, [style], hooks, device=device)
    metrics = [value for _, value in hooks.series("style_loss")]
    if len(metrics) != params.steps:
        raise RuntimeError(f"Gatys reported {len(metrics)} style losses for {params.steps} steps")
    layer_weights = params.style_layer_weights or [1.0 / len(params.style_layers)] * len(params.style_layers)
    if len(set(layer_weights)) != 1:
        raise ValueError("the score weighs every style layer alike; so must Gatys' metric")
    scale = params.style_weight * layer_weights[0]
    first = score(content_tensor)  # init=content: step 1 measures the content picture itself
    if not np.isclose(metrics[0] / scale, first, rtol=MAP_TOLERANCE, atol=0.0):
        raise RuntimeError(
            f"Gatys' style metric / {scale:g} = {metrics[0] / scale:.6g} on its first image, but the score says "
            f"{first:.6g}: the mapping between them does not hold"
        )
    return Gatys(
        image=result.image,
        metrics=metrics,
        step_ends=[hooks.marks[step] - hooks.loop_started for step in range(1, params.steps + 1)],
        setup_seconds=hooks.loop_started - started,
        scale=scale,
    )


@dataclass
class Applied:
    """Measurements 2 and 3."""

    train_seconds: float
    train_final: dict[str, float]
    apply_seconds: list[float]
    johnson_score: float
    gatys_score: float
    johnson_judge: float
    gatys_judge: float
    content_score: float
    johnson_ssim: float
    gatys_ssim: float
    gatys_steps: int
    gatys_reach_steps: int | None
    gatys_reach_seconds: float | None
    gatys_all_seconds: float
    gatys_setup_seconds: float
    gatys_curve: list[tuple[int, float, float]]
    johnson_image: torch.Tensor
    gatys_image: torch.Tensor

    @property
    def apply_median(self) -> float:
        """The median stylize time, seconds."""
        return statistics.median(self.apply_seconds)

    @property
    def speed_up(self) -> float:
        """Gatys' seconds to the applied style loss / stylize's; a lower bound (all its steps) when not reached."""
        seconds = self.gatys_reach_seconds if self.gatys_reach_seconds is not None else self.gatys_all_seconds
        return seconds / self.apply_median

    @property
    def quality_ratio(self) -> float:
        """The applied output's style score / Gatys' final image's."""
        return self.johnson_score / self.gatys_score


def measure_applied(
    content_set: ContentSet,
    style: Image.Image,
    config: Config,
    device: torch.device,
    deadline: Deadline = NO_DEADLINE,
) -> Applied:
    """Train a Johnson network, apply it to the held-out content, and run Gatys on the same pair."""
    # -- Train the network (a complete style.train run; its model as style.apply loads it) ------
    params = johnson_params(size=config.train_size, batch_size=config.batch_size, steps=config.train_steps)
    hooks = TimedHooks(deadline=deadline)
    started = time.perf_counter()
    summary = train_johnson(params, content_set, [style], hooks, device=device)
    sync(device)
    train_seconds = time.perf_counter() - started
    net: TransformerNet = load_model(hooks.artifacts[MODEL_ARTIFACT][0]).to(device)
    print(
        f"johnson network: {config.train_steps} steps at {config.train_size} px, batch {config.batch_size}, "
        f"{train_seconds:.1f} s; final {_losses(summary['final_metrics'])}",
        flush=True,
    )

    # -- Apply: warm stylize timings on the content picture --------------------------------------
    content = load_builtin_image(CONTENT)
    content_tensor = to_tensor(content, config.apply_size).to(device)  # 1 x 3 x H x W
    applied = stylize(net, content_tensor)
    sync(device)
    apply_seconds = []
    for _ in range(config.apply_repeats):
        sync(device)
        begun = time.perf_counter()
        applied = stylize(net, content_tensor)
        sync(device)
        apply_seconds.append(time.perf_counter() - begun)
        deadline.check("the stylize timings")

    # -- Scores, and Gatys on the same objective --------------------------------------------------
    encoder = build_vgg(NETWORK, WEIGHTS, seed=SEED, layers=list(JOHNSON_STYLE_LAYERS)).to(device)
    style_tensor = to_tensor(style, config.apply_size).to(device)
    score = StyleScore(encoder, style_tensor, params.style_layers)
    judge = JudgeScore(content_tensor, style)
    gatys = run_gatys(
        gatys_params(params, size=config.apply_size, steps=config.gatys_steps),
        content,
        style,
        score,
        content_tensor,
        device,
        deadline,
    )
    johnson_score = score(applied)
    reach = gatys.steps_to(johnson_score)
    return Applied(
        train_seconds=train_seconds,
        train_final=dict(summary["final_metrics"]),
        apply_seconds=apply_seconds,
        johnson_score=johnson_score,
        gatys_score=score(gatys.image),
        johnson_judge=judge(applied),
        gatys_judge=judge(gatys.image),
        content_score=score(content_tensor),
        johnson_ssim=ssim(applied, content_tensor),
        gatys_ssim=ssim(gatys.image, content_tensor),
        gatys_steps=config.gatys_steps,
        gatys_reach_steps=reach,
        gatys_reach_seconds=gatys.seconds_to(reach) if reach is not None else None,
        gatys_all_seconds=gatys.seconds_to(config.gatys_steps),
        gatys_setup_seconds=gatys.setup_seconds,
        gatys_curve=gatys.curve(),
        johnson_image=applied.cpu(),
        gatys_image=gatys.image.cpu(),
    )


def _losses(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())


# -- Report ---------------------------------------------------------------------------------------


def _machine(device: torch.device) -> str:
    host = f"{cpu_model()}, nproc {len(os.sched_getaffinity(0))}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), host {host}"
    return host


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _rates(runs: list[Run]) -> str:
    rates = [r.images_per_s for r in runs]
    return f"{', '.join(f'{v:.3g}' for v in rates)} images/s (median {statistics.median(rates):.3g})"


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def report(config: Config, references: list[Run], ateliers: list[Run], applied: Applied) -> list[bool]:
    """Print the figures and the three ratio lines; whether each target was met."""
    reference_rate = statistics.median(r.images_per_s for r in references)
    atelier_rate = statistics.median(r.images_per_s for r in ateliers)
    throughput = atelier_rate / reference_rate
    print(f"reference (pytorch/examples fast_neural_style): {_rates(references)}")
    print(f"atelier (train_johnson, InMemoryHooks): {_rates(ateliers)}")

    a = applied
    times = ", ".join(f"{1000 * s:.1f}" for s in a.apply_seconds)
    print(f"stylize {config.apply_size} px ({CONTENT}), warm: {times} ms (median {1000 * a.apply_median:.1f} ms)")
    print(
        f"style score (bench/style.py StyleLoss on relu1_2..relu4_3, sum): content {a.content_score:.4g}, "
        f"johnson {a.johnson_score:.4g}, gatys {a.gatys_steps} steps {a.gatys_score:.4g}"
    )
    print(
        f"judge score (bench/style.py tutorial model, VGG19 conv_1..conv_5): johnson {a.johnson_judge:.4g}, "
        f"gatys {a.gatys_judge:.4g}"
    )
    print(f"content SSIM: johnson {a.johnson_ssim:.3f}, gatys {a.gatys_ssim:.3f}")
    curve = "; ".join(f"{k}: {value:.4g} ({seconds:.1f} s)" for k, value, seconds in a.gatys_curve)
    print(f"gatys style score after N steps (loop seconds): {curve}; {a.gatys_steps}: {a.gatys_score:.4g}")
    if a.gatys_reach_steps is not None and a.gatys_reach_seconds is not None:
        print(
            f"gatys reaches the applied style loss in {a.gatys_reach_steps} steps, {a.gatys_reach_seconds:.2f} s "
            f"(loop only; set-up {a.gatys_setup_seconds:.2f} s more)"
        )
        speed_up = f"{a.speed_up:.0f}x"
    else:
        print(
            f"gatys: not reached in {a.gatys_steps} steps ({a.gatys_all_seconds:.2f} s, loop only; set-up "
            f"{a.gatys_setup_seconds:.2f} s more): the speed-up is at least the figure below"
        )
        speed_up = f"> {a.speed_up:.0f}x"
    if a.gatys_reach_steps == 0:
        print("gatys' starting image (the content) already scores at or below the applied output")

    met = [
        throughput >= THROUGHPUT_TARGET,
        a.gatys_reach_steps != 0 and a.speed_up >= SPEED_UP_TARGET,
        a.quality_ratio <= QUALITY_TARGET,
    ]
    print(f"load average after {_load()}")
    print(
        f"throughput ratio (Atelier images/s / reference images/s): {throughput:.2f} "
        f"(target >= {THROUGHPUT_TARGET:g}: {_verdict(met[0])})"
    )
    print(
        f"apply speed-up (Gatys seconds to the applied style loss / stylize seconds): {speed_up} "
        f"(target >= {SPEED_UP_TARGET:g}: {_verdict(met[1])})"
    )
    print(
        f"quality ratio (Johnson style loss / Gatys {a.gatys_steps}-step style loss): {a.quality_ratio:.2f} "
        f"(target <= {QUALITY_TARGET:g}: {_verdict(met[2])})"
    )
    return met


# -- Entry point ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Config]:
    """The command line and the config it gives (the device's defaults, overridden by options)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch intra-op threads (CPU)")
    parser.add_argument("--size", type=int, help="training crop size of the throughput runs (CPU 128, GPU 256)")
    parser.add_argument("--batch-size", type=int, help="both sides, throughput and the trained network (4)")
    parser.add_argument("--steps", type=int, help="timed steps per throughput run (CPU 5, GPU 100)")
    parser.add_argument("--warmup", type=int, help="untimed steps before them, in the same run (CPU 1, GPU 10)")
    parser.add_argument("--repeats", type=int, help="alternating throughput runs per side (3)")
    parser.add_argument("--train-steps", type=int, help="steps of the network that is applied (CPU 120, GPU 2000)")
    parser.add_argument("--train-size", type=int, help="its crop size (CPU 128, GPU 256)")
    parser.add_argument("--apply-size", type=int, help="the applied picture's longer side (256)")
    parser.add_argument("--apply-repeats", type=int, help="timed stylize calls (CPU 5, GPU 20)")
    parser.add_argument("--gatys-steps", type=int, help="Gatys steps, the quality reference (300)")
    parser.add_argument("--timeout-s", type=int, default=DEFAULT_TIMEOUT_S, help="give up after this long")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--out", type=Path, help="save the applied and the Gatys picture here (PNG)")
    args = parser.parse_args(argv)
    defaults = DEFAULTS[args.device]
    overrides = {f.name: getattr(args, f.name) for f in fields(Config) if getattr(args, f.name) is not None}
    config = replace(defaults, **overrides)
    if config.warmup < 1 or config.steps < 1 or config.repeats < 1 or config.apply_repeats < 1:
        parser.error("--warmup, --steps, --repeats and --apply-repeats must be at least 1")
    return args, config


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the figures and the three ratio lines (last); the exit status."""
    args, config = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, config)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, config: Config) -> int:
    device = torch.device(args.device)
    print(f"machine: {_machine(device)}; load average {_load()}", flush=True)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} intra-op "
        f"thread(s), device {device}",
        flush=True,
    )
    print(f"config: {config}", flush=True)
    try:
        deadline = Deadline.after(args.timeout_s)
        content = builtin_content()
        style = load_builtin_image(STYLE)
        encoder = build_vgg(NETWORK, WEIGHTS, seed=SEED, layers=list(JOHNSON_STYLE_LAYERS))
        references, ateliers = measure_throughput(content, style, encoder, config, device, deadline)
        applied = measure_applied(content, style, config, device, deadline)
    except Exception as exc:  # any failure (the deadline: DeadlineExceeded, StopRequested): nothing was measured
        traceback.print_exc()
        print(f"could not measure: {type(exc).__name__}: {exc}", flush=True)
        return EXIT_UNMEASURED
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / OUT_JOHNSON).write_bytes(to_png(applied.johnson_image))
        (args.out / OUT_GATYS).write_bytes(to_png(applied.gatys_image))
    met = report(config, references, ateliers, applied)
    if args.strict and not all(met):
        return EXIT_MISSED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
