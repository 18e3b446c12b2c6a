"""Gatys neural style transfer as a resumable loop: optimise the pixels of one image.

``transfer`` is pure PyTorch: it talks to the outside world only through ``TrainHooks``
(metrics, progress, checkpoints, the output artifact, stop requests).

Layers follow Gatys et al., who name them conv4_2 etc. but (Caffe's ReLUs being in place)
use the rectified activations: content at relu4_2, style at relu1_1 ... relu5_1.

The image starts as the content picture and is optimised directly in [0, 1] pixel space
with Adam, clamped after every step. Reported losses are the weighted terms the optimiser
sees (``total_loss`` is their sum), measured before that step's update. ``params.seed``
seeds the random encoder, the only random draw; the global RNG is left alone, so on CPU a
resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Final

import torch
from PIL import Image

from shared.jobs.specs import StyleTransferParams
from workers.hooks import StopRequested, TrainHooks
from workers.style.images import to_png, to_tensor
from workers.style.losses import (
    ContentLoss,
    PerceptualLoss,
    StyleLoss,
    TotalVariationLoss,
    gram_targets,
)
from workers.style.vgg import WEIGHTS_RANDOM, build_vgg19

CONTENT_LAYERS: Final[tuple[str, ...]] = ("relu4_2",)
STYLE_LAYERS: Final[tuple[str, ...]] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

CHECKPOINT_VERSION: Final = 1
OUTPUT_ARTIFACT: Final = "output.png"
ARTIFACT_KIND_OUTPUT: Final = "output"
PNG_CONTENT_TYPE: Final = "image/png"
PIXEL_MIN: Final = 0.0
PIXEL_MAX: Final = 1.0

METRIC_NAMES: Final = {
    "content": "content_loss",
    "style": "style_loss",
    "tv": "tv_loss",
    "total": "total_loss",
}
RANDOM_WEIGHTS_WARNING: Final = (
    "weights=random: the VGG19 encoder has seeded random weights, so the result transfers "
    "colours and textures but not ImageNet-quality style"
)


class DivergenceError(RuntimeError):
    """The optimisation produced a non-finite loss; continuing would only produce garbage."""

    def __init__(self, step: int, losses: dict[str, float]) -> None:
        values = ", ".join(f"{name}={value:g}" for name, value in losses.items())
        super().__init__(
            f"style transfer diverged at step {step}: non-finite loss ({values}); lower lr or style_weight"
        )
        self.step = step
        self.losses = losses


def transfer(
    params: StyleTransferParams,
    content: Image.Image,
    styles: list[Image.Image],
    hooks: TrainHooks,
    *,
    device: str | torch.device = "cpu",
    weights_dir: Path | None = None,
    allow_download: bool = False,
) -> dict[str, Any]:
    """Run (or resume) Gatys style transfer and save ``output.png``; returns a JSON-able summary."""
    if len(styles) != len(params.styles):
        raise ValueError(f"got {len(styles)} style images for {len(params.styles)} styles in params")
    dev = torch.device(device)

    # -- Encoder: one forward pass per step feeds every loss -----------------------------
    if params.weights == WEIGHTS_RANDOM:
        hooks.warn(RANDOM_WEIGHTS_WARNING)
    layers = tuple(dict.fromkeys(CONTENT_LAYERS + STYLE_LAYERS))
    encoder = build_vgg19(
        params.weights, seed=params.seed, layers=layers, weights_dir=weights_dir, allow_download=allow_download
    ).to(dev)

    # -- Targets, computed once ----------------------------------------------------------
    content_image = to_tensor(content, params.size).to(dev)  # 1 x 3 x H x W; fixes the output shape
    with torch.no_grad():
        content_feats = encoder(content_image)
        style_grams = [gram_targets(encoder(to_tensor(s, params.size).to(dev)), STYLE_LAYERS) for s in styles]
    loss_fn = PerceptualLoss(
        ContentLoss(content_feats, CONTENT_LAYERS, params.content_weight),
        StyleLoss(style_grams, params.blend(), STYLE_LAYERS, None, params.style_weight),
        TotalVariationLoss(params.tv_weight),
    )

    # -- Image and optimiser, or the state of a checkpoint -------------------------------
    image = content_image.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([image], lr=params.lr)
    start_step = _resume(hooks.load_checkpoint(), image, optimizer)

    # -- Optimisation loop ---------------------------------------------------------------
    last_metrics: dict[str, float] = {}
    for step in range(start_step + 1, params.steps + 1):
        optimizer.zero_grad(set_to_none=True)
        losses = loss_fn(image, encoder(image))
        losses["total"].backward()
        optimizer.step()
        with torch.no_grad():
            image.clamp_(PIXEL_MIN, PIXEL_MAX)

        # Host syncs (.item()) happen only on log, checkpoint and stop steps; so does the
        # divergence check.
        if step % params.log_every == 0 or step == params.steps:
            last_metrics = _finite_metrics(step, losses)
            hooks.report_metrics(step, last_metrics)
            hooks.report_progress(step, params.steps)
        reason = hooks.should_stop()
        if step % params.checkpoint_every == 0 or reason is not None:
            _finite_metrics(step, losses)  # never persist a diverged image
            hooks.save_checkpoint(step, _checkpoint_bytes(step, image, optimizer, params))
        if reason is not None:
            raise StopRequested(reason, step)

    # -- Output --------------------------------------------------------------------------
    png = to_png(image)
    hooks.save_artifact(OUTPUT_ARTIFACT, png, kind=ARTIFACT_KIND_OUTPUT, content_type=PNG_CONTENT_TYPE)
    height, width = image.shape[-2:]
    return {
        "steps": params.steps,
        "resumed_from_step": start_step or None,
        "width": int(width),
        "height": int(height),
        "weights": params.weights,
        "final_metrics": last_metrics,
        "artifact": OUTPUT_ARTIFACT,
    }


def _finite_metrics(step: int, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The losses as named floats; DivergenceError if any is NaN or infinite."""
    values = {METRIC_NAMES[name]: float(value.detach().item()) for name, value in losses.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise DivergenceError(step, values)
    return values


def _checkpoint_bytes(
    step: int, image: torch.Tensor, optimizer: torch.optim.Optimizer, params: StyleTransferParams
) -> bytes:
    """Serialise the resumable state; loadable with ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(
        {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "image": image.detach().cpu(),
            "optimizer": optimizer.state_dict(),
            "params": params.model_dump(mode="json"),
        },
        buffer,
    )
    return buffer.getvalue()


def _resume(data: bytes | None, image: torch.Tensor, optimizer: torch.optim.Optimizer) -> int:
    """Restore image and optimiser from checkpoint bytes; the last completed step (0 if none)."""
    if data is None:
        return 0
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    version = state.get("version")
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"unsupported style checkpoint version {version!r} (expected {CHECKPOINT_VERSION})")
    saved = state["image"]
    if saved.shape != image.shape:
        raise ValueError(
            f"checkpoint image has shape {tuple(saved.shape)} but this job's image has {tuple(image.shape)}"
        )
    with torch.no_grad():
        image.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])
