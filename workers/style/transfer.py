"""Gatys neural style transfer as a resumable loop: optimise the pixels of one image.

``transfer`` is pure PyTorch: it talks to the outside world only through ``TrainHooks``
(metrics, progress, checkpoints, artifacts, stop requests).

Layers follow Gatys et al., who name them conv4_2 etc. but (Caffe's ReLUs being in place)
use the rectified activations: by default content at relu4_2, style at relu1_1 ... relu5_1.
Any layer of the chosen network (VGG19 or VGG16) can be named instead.

Adam optimises the pixels directly in [0, 1], clamped after every step. L-BFGS optimises
logits z with pixels = sigmoid(z): clamping under L-BFGS (as the PyTorch tutorial does)
invalidates its curvature pairs and makes the loss jump by orders of magnitude, while the
sigmoid keeps the problem smooth and the pixels in range. One L-BFGS step is one iteration
with one loss evaluation (no line search), and its curvature history carries over between
steps, so a step costs the same as an Adam step and the checkpointed optimiser state
resumes it exactly.

Multi-scale (``scales``, coarse to fine): ``steps`` steps at each size, each scale starting
from the previous result upsampled, with fresh targets and a fresh optimiser; step numbers
run on across scales. Each finished scale is saved as ``scales/<size>px.png``.

Colour preservation is luminance-only transfer (Gatys et al. 2016, "Preserving colour"): the
content and (mean/std-matched) style images are reduced to their luminance, the loop
optimises a grey image, and every saved image combines its luminance with the content's U/V.

Speed: on CUDA the encoder runs channels_last under bf16 autocast (``precision="auto"``; its
features are cast back to fp32, so Grams, losses and the image stay fp32), Adam is the fused
kernel (its step count stays on the device), and the loop has no host sync per step: logged
losses stay on the device and come back in one transfer per flush (workers/training.py),
where divergence is checked too (and before every checkpoint or snapshot). torch's L-BFGS itself reads its loss and gradient norms on the host each iteration.

Reported losses are the weighted terms the optimiser sees (``total_loss`` is their sum),
measured before that step's update. ``params.seed`` seeds the random encoder and the noise
init from private generators; the global RNG is left alone, so on CPU a resumed run is
bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image

from shared.jobs.params import MIN_STYLE_SIZE, is_upload_ref
from shared.jobs.style_transfer import StyleTransferParams
from workers.hooks import StopRequested, TrainHooks
from workers.style.images import luminance, to_png, to_tensor, with_chroma_of
from workers.style.losses import (
    ContentLoss,
    PerceptualLoss,
    StyleLoss,
    TotalVariationLoss,
    gram_targets,
)
from workers.style.vgg import WEIGHTS_RANDOM, WEIGHTS_UPLOADED, Encoder, build_vgg
from workers.training import (
    OUTPUT_KIND,
    PNG_CONTENT_TYPE,
    SAMPLE_KIND,
    DivergenceWatch,
    MetricLog,
    SpeedPath,
)

CHECKPOINT_VERSION: Final = 2
READABLE_CHECKPOINT_VERSIONS: Final = (1, 2)  # version 1: single scale, no "scale" entry
OUTPUT_ARTIFACT: Final = "output.png"
SNAPSHOT_ARTIFACT: Final = "snapshots/step-{step:06d}.png"
SCALE_ARTIFACT: Final = "scales/{size}px.png"
PIXEL_MIN: Final = 0.0
PIXEL_MAX: Final = 1.0
UPSAMPLE_MODE: Final = "bicubic"
LBFGS_HISTORY: Final = 100  # torch's default, and the PyTorch tutorial's
STD_FLOOR: Final = 1e-6  # luminance matching of a flat style image
LOGIT_EPS: Final = 1e-3  # pixels are kept in [eps, 1 - eps] before their logit is taken

METRIC_NAMES: Final = {
    "content": "content_loss",
    "style": "style_loss",
    "tv": "tv_loss",
    "total": "total_loss",
}
DIVERGED: Final = "style transfer"
DIVERGED_ADVICE: Final = "lower lr or style_weight"
RANDOM_WEIGHTS_WARNING: Final = (
    "weights=random: the VGG encoder has seeded random weights, so the result transfers "
    "colours and textures but not ImageNet-quality style"
)

LossFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


EncodeFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def encode_on(speed: SpeedPath, encoder: Encoder) -> EncodeFn:
    """``encoder`` with the speed path's layout and autocast; its features come back in fp32.

    Only the encoder's convolutions run in bf16, so Gram matrices, MSEs and the optimised image
    stay in fp32.
    """
    if not speed.bf16 and not speed.channels_last:
        return encoder

    def encode(image: torch.Tensor) -> dict[str, torch.Tensor]:
        if speed.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with speed.autocast():
            feats = encoder(image)
        return {layer: value.float() for layer, value in feats.items()}

    return encode


@dataclass
class TransferResult:
    """The final image (1, 3, H, W) in [0, 1], as saved, and the JSON-able summary."""

    image: torch.Tensor
    summary: dict[str, Any]


@dataclass
class _Resume:
    step: int
    scale: int
    variable: torch.Tensor
    optimizer: dict[str, Any]


class _Canvas:
    """The optimised variable: the pixels themselves (Adam) or their logits (L-BFGS)."""

    def __init__(self, variable: torch.Tensor, *, logits: bool) -> None:
        self.variable = variable.detach().clone().requires_grad_(True)
        self.logits = logits

    @classmethod
    def of_pixels(cls, pixels: torch.Tensor, *, logits: bool) -> _Canvas:
        """A canvas showing ``pixels`` (clamped to the open interval first for logits)."""
        if logits:
            return cls(torch.logit(pixels.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)), logits=True)
        return cls(pixels, logits=False)

    def pixels(self) -> torch.Tensor:
        """The image in [0, 1] (differentiable in the variable)."""
        return torch.sigmoid(self.variable) if self.logits else self.variable

    def project(self) -> None:
        """Back into the feasible set after a step: a clamp for pixels, nothing for logits."""
        if not self.logits:
            with torch.no_grad():
                self.variable.clamp_(PIXEL_MIN, PIXEL_MAX)


def transfer(
    params: StyleTransferParams,
    content: Image.Image,
    styles: list[Image.Image],
    hooks: TrainHooks,
    *,
    device: str | torch.device = "cpu",
    weights_dir: Path | None = None,
    allow_download: bool = False,
    weights_state: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Run (or resume) Gatys style transfer and save ``output.png``; returns a JSON-able summary."""
    result = run_transfer(
        params,
        content,
        styles,
        hooks,
        device=device,
        weights_dir=weights_dir,
        allow_download=allow_download,
        weights_state=weights_state,
    )
    hooks.save_artifact(OUTPUT_ARTIFACT, to_png(result.image), kind=OUTPUT_KIND, content_type=PNG_CONTENT_TYPE)
    return result.summary


def run_transfer(
    params: StyleTransferParams,
    content: Image.Image,
    styles: list[Image.Image],
    hooks: TrainHooks,
    *,
    device: str | torch.device = "cpu",
    weights_dir: Path | None = None,
    allow_download: bool = False,
    weights_state: Mapping[str, torch.Tensor] | None = None,
) -> TransferResult:
    """Every scale of the optimisation, with checkpoints and snapshots; the final image stays in memory.

    ``weights_state`` is the state dict of the upload that ``params.weights`` names.
    """
    if len(styles) != len(params.styles):
        raise ValueError(f"got {len(styles)} style images for {len(params.styles)} styles in params")
    dev = torch.device(device)

    # -- Encoder: one forward pass per step feeds every loss -----------------------------
    encoder, fast = build_loss_encoder(
        params,
        hooks,
        device=dev,
        weights_dir=weights_dir,
        allow_download=allow_download,
        weights_state=weights_state,
    )

    resume = _load_checkpoint(hooks.load_checkpoint())
    sizes = params.scale_sizes()
    total = params.total_steps()
    canvas: _Canvas | None = None
    logits = params.optimizer == "lbfgs"
    colours = torch.empty(0)
    names = tuple(METRIC_NAMES.values())
    watch = DivergenceWatch(names, dev, what=DIVERGED, advice=DIVERGED_ADVICE)
    log: MetricLog[None] = MetricLog(names, watch, lambda step, metrics, _: hooks.report_metrics(step, metrics))

    for index, size in enumerate(sizes):
        first_step = index * params.steps  # steps of this scale are first_step+1 .. first_step+steps
        if resume is not None and resume.scale > index:
            continue  # finished before the checkpoint was taken

        # -- Targets at this size, computed once -------------------------------------------
        content_image = to_tensor(content, size).to(dev)  # 1 x 3 x H x W; fixes this scale's shape
        colours = content_image
        style_size = max(MIN_STYLE_SIZE, round(size * params.style_scale))
        style_images = [to_tensor(s, style_size).to(dev) for s in styles]
        if params.preserve_colors:
            style_images = [_matched_luminance(s, content_image) for s in style_images]
            content_image = luminance(content_image)
        loss_fn = _loss_fn(params, encode_on(fast, encoder), content_image, style_images)

        # -- Image and optimiser: a checkpoint's, the previous scale's, or the init ----------
        if resume is not None and resume.scale == index:
            if resume.variable.shape != content_image.shape:
                raise ValueError(
                    f"checkpoint image has shape {tuple(resume.variable.shape)} but this job's image at "
                    f"{size} px has {tuple(content_image.shape)}"
                )
            canvas = _Canvas(resume.variable.to(dev), logits=logits)
        elif canvas is None:
            canvas = _Canvas.of_pixels(_init_image(params, content_image, style_images), logits=logits)
        else:
            upsampled = F.interpolate(canvas.pixels().detach(), size=content_image.shape[-2:], mode=UPSAMPLE_MODE)
            canvas = _Canvas.of_pixels(upsampled.clamp(PIXEL_MIN, PIXEL_MAX), logits=logits)
        optimizer = _optimizer(params, canvas.variable)
        start = first_step
        if resume is not None and resume.scale == index:
            optimizer.load_state_dict(resume.optimizer)
            start = resume.step
        step_fn = _step_fn(optimizer, canvas, loss_fn)

        # -- Optimisation loop ---------------------------------------------------------------
        # No host sync per step: the losses stay on the device in ``log`` and are read back in
        # one transfer per flush (workers/training.py), which is also where divergence is
        # checked, over every step; a checkpoint or snapshot flushes first, so a diverged
        # image is never persisted.
        for step in range(start + 1, first_step + params.steps + 1):
            losses = torch.stack([value.detach().float() for value in step_fn().values()])
            watch.observe(step, losses)
            canvas.project()
            hooks.report_progress(step, total)  # host-side bookkeeping, no sync
            if step % params.log_every == 0 or step == total:
                log.add(step, losses, (), None)
            snapshot = params.snapshot_every is not None and step % params.snapshot_every == 0
            reason = hooks.should_stop()
            if snapshot or reason is not None or step % params.checkpoint_every == 0 or log.due():
                log.flush()
            if snapshot:
                _save_image(hooks, SNAPSHOT_ARTIFACT.format(step=step), _visible(params, canvas, colours))
            if step % params.checkpoint_every == 0 or reason is not None:
                hooks.save_checkpoint(step, _checkpoint_bytes(step, index, canvas, optimizer, params))
            if reason is not None:
                raise StopRequested(reason, step)

        log.flush()
        if len(sizes) > 1:
            _save_image(hooks, SCALE_ARTIFACT.format(size=size), _visible(params, canvas, colours))

    # -- Output --------------------------------------------------------------------------
    if canvas is None:  # unreachable: there is at least one scale
        raise RuntimeError("no scale ran")
    final = _visible(params, canvas, colours)
    height, width = final.shape[-2:]
    summary = {
        "steps": total,
        "scales": sizes,
        "network": params.network,
        "optimizer": params.optimizer,
        "resumed_from_step": resume.step if resume is not None and resume.step else None,
        "width": int(width),
        "height": int(height),
        "weights": params.weights,
        "final_metrics": log.last,
        "precision": fast.precision,
        "artifact": OUTPUT_ARTIFACT,
    }
    return TransferResult(final, summary)


class LossNetworkParams(Protocol):
    """The params fields that choose the loss network (StyleTransferParams, StyleTrainParams); read only."""

    @property
    def weights(self) -> str: ...
    @property
    def network(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def pooling(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def content_layers(self) -> list[str]: ...
    @property
    def style_layers(self) -> list[str]: ...


def build_loss_encoder(
    params: LossNetworkParams,
    hooks: TrainHooks,
    *,
    device: torch.device,
    weights_dir: Path | None = None,
    allow_download: bool = False,
    weights_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[Encoder, SpeedPath]:
    """The frozen VGG encoder of ``params``' layers on ``device`` and its speed path; warns of random weights.

    ``weights_state`` is the state dict of the upload that ``params.weights`` names.
    """
    if params.weights == WEIGHTS_RANDOM:
        hooks.warn(RANDOM_WEIGHTS_WARNING)
    uploaded = is_upload_ref(params.weights)
    if uploaded and weights_state is None:
        raise ValueError(f"params.weights names upload {params.weights}; pass its state dict as weights_state")
    encoder = build_vgg(
        params.network,
        WEIGHTS_UPLOADED if uploaded else params.weights,
        seed=params.seed,
        layers=tuple(dict.fromkeys(params.content_layers + params.style_layers)),
        pooling=params.pooling,
        weights_dir=weights_dir,
        allow_download=allow_download,
        state=weights_state if uploaded else None,
    ).to(device)
    fast = SpeedPath.of(params.precision, device)
    if fast.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder, fast


def _loss_fn(
    params: StyleTransferParams, encoder: EncodeFn, content_image: torch.Tensor, style_images: list[torch.Tensor]
) -> LossFn:
    """The weighted losses of an image, with targets from one no-grad pass per target image."""
    with torch.no_grad():
        content_feats = encoder(content_image)
        style_grams = [gram_targets(encoder(s), params.style_layers) for s in style_images]
    perceptual = PerceptualLoss(
        ContentLoss(content_feats, params.content_layers, params.content_weight),
        StyleLoss(style_grams, params.blend(), params.style_layers, params.style_layer_weights, params.style_weight),
        TotalVariationLoss(params.tv_weight),
    )
    return lambda image: perceptual(image, encoder(image))


def _optimizer(params: StyleTransferParams, variable: torch.Tensor) -> torch.optim.Optimizer:
    if params.optimizer == "lbfgs":
        return torch.optim.LBFGS([variable], lr=params.lr, max_iter=1, history_size=LBFGS_HISTORY)
    # Fused Adam keeps its step count on the device: no .item() per step (CPU and CUDA).
    return torch.optim.Adam([variable], lr=params.lr, fused=True)


def _step_fn(
    optimizer: torch.optim.Optimizer, canvas: _Canvas, loss_fn: LossFn
) -> Callable[[], dict[str, torch.Tensor]]:
    """One optimiser step (one loss evaluation); returns the losses of the image before it."""

    def step() -> dict[str, torch.Tensor]:
        evaluated: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            losses = loss_fn(canvas.pixels())
            losses["total"].backward()
            evaluated.update(losses)
            return losses["total"]

        if isinstance(optimizer, torch.optim.LBFGS):
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        return evaluated

    return step


def _init_image(
    params: StyleTransferParams, content_image: torch.Tensor, style_images: list[torch.Tensor]
) -> torch.Tensor:
    """The starting image: the content, seeded uniform noise, or noise with the styles' colour stats."""
    if params.init == "content":
        return content_image.clone()
    generator = torch.Generator().manual_seed(params.seed)
    shape = tuple(content_image.shape)
    if params.init == "noise":
        noise = torch.rand(shape, generator=generator)
    else:  # style-stats: per-channel mean and std of the blended styles
        blend = params.blend()
        mean = sum(w * s.mean(dim=(2, 3), keepdim=True).cpu() for w, s in zip(blend, style_images, strict=True))
        std = sum(w * s.std(dim=(2, 3), keepdim=True).cpu() for w, s in zip(blend, style_images, strict=True))
        noise = torch.randn(shape, generator=generator) * torch.as_tensor(std) + torch.as_tensor(mean)
    return noise.clamp(PIXEL_MIN, PIXEL_MAX).to(content_image.device)


def _matched_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's luminance, shifted and scaled to the content luminance's mean and std."""
    style_y, content_y = luminance(style), luminance(content)
    scale = content_y.std() / style_y.std().clamp_min(STD_FLOOR)
    return ((style_y - style_y.mean()) * scale + content_y.mean()).clamp(PIXEL_MIN, PIXEL_MAX)


def _visible(params: StyleTransferParams, canvas: _Canvas, colours: torch.Tensor) -> torch.Tensor:
    """The image as the user sees it: with the content's colours under preserve_colors."""
    shown = canvas.pixels().detach()
    return with_chroma_of(shown, colours) if params.preserve_colors else shown


def _save_image(hooks: TrainHooks, name: str, image: torch.Tensor) -> None:
    hooks.save_artifact(name, to_png(image), kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)


def _checkpoint_bytes(
    step: int, scale: int, canvas: _Canvas, optimizer: torch.optim.Optimizer, params: StyleTransferParams
) -> bytes:
    """Serialise the resumable state; loadable with ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(
        {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "scale": scale,
            "image": canvas.pixels().detach().cpu(),
            "variable": canvas.variable.detach().cpu(),
            "optimizer": optimizer.state_dict(),
            "params": params.model_dump(mode="json"),
        },
        buffer,
    )
    return buffer.getvalue()


def _load_checkpoint(data: bytes | None) -> _Resume | None:
    """The state of checkpoint bytes, or None on a fresh start."""
    if data is None:
        return None
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    version = state.get("version")
    if version not in READABLE_CHECKPOINT_VERSIONS:
        raise ValueError(f"unsupported style checkpoint version {version!r} (expected {CHECKPOINT_VERSION})")
    return _Resume(
        step=int(state["step"]),
        scale=int(state.get("scale", 0)),
        variable=state.get("variable", state["image"]),
        optimizer=state["optimizer"],
    )
