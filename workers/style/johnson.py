"""style.train, method johnson: a feed-forward style network (Johnson et al. 2016) as a resumable loop.

``TransformerNet`` is the network of Johnson et al. as pytorch/examples' fast_neural_style builds it:
reflection padding before every convolution, affine instance norm, a 9x9 stride-1 convolution, two
3x3 stride-2 ones, residual blocks, then upsample-then-convolve (nearest 2x upsampling and a 3x3
convolution, not a transposed convolution, so no checkerboard artefacts) and a 9x9 convolution to
RGB. Its output goes through a sigmoid into [0, 1], the range the loss encoder reads: unlike a clamp
it passes a gradient everywhere, so no pixel stops learning once it saturates. Any height and width
work: the input is padded (reflecting) to a multiple of ``SIZE_MULTIPLE`` and the output cropped back.

``train_johnson`` is pure PyTorch and talks to the outside only through ``TrainHooks``. Per step it
draws one content batch (``ContentSet.batch``, a pure function of (seed, step)), computes the content
targets with one no-grad pass of the encoder's layers up to the deepest content layer, runs the network
once and the encoder once over its output; the loss is content + style (Gram targets of the blended
style pictures at ``params.style_size``, by default ``params.size``) + total variation, the losses of style.transfer
(workers/style/losses.py). The encoder is style.transfer's (``build_loss_encoder``), with its speed
path on CUDA (channels_last, bf16 autocast, features back in fp32); logged losses stay on the device
until a flush (workers/training.py), where divergence is checked too, and before every checkpoint
and preview.

A checkpoint holds the network, Adam's state, the step and the last reported losses; the network's
init is drawn from a private generator seeded with ``params.seed``, so on CPU a stopped and resumed
run ends bit-identical to an uninterrupted one. The trained network is saved as ``model.safetensors``
(loaded back with ``load_model``, which never unpickles) next to its card ``model.json``.
"""

from __future__ import annotations

import io
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torchvision.utils import make_grid

from shared.jobs.style_train import (
    CARD_ARTIFACT,
    FINAL_PREVIEW_ARTIFACT,
    MAX_RESIDUAL_BLOCKS,
    MAX_WIDTH,
    MODEL_ARTIFACT,
    PREVIEW_ARTIFACT,
    StyleTrainParams,
)
from workers.hooks import StopRequested, TrainHooks
from workers.style.content import ContentSet, preview_pictures
from workers.style.images import to_png, to_tensor
from workers.style.losses import ContentLoss, PerceptualLoss, StyleLoss, TotalVariationLoss, gram_targets
from workers.style.transfer import METRIC_NAMES, build_loss_encoder, encode_on
from workers.style.vgg import Encoder
from workers.training import (
    BINARY_CONTENT_TYPE,
    OUTPUT_KIND,
    PNG_CONTENT_TYPE,
    SAMPLE_KIND,
    DivergenceWatch,
    MetricLog,
    fused_adam,
    to_device,
)

METHOD: Final = "johnson"
JSON_CONTENT_TYPE: Final = "application/json"
CHECKPOINT_VERSION: Final = 1
MODEL_FORMAT: Final = "atelier.johnson.v1"  # safetensors metadata: what the file holds
METADATA_KEY: Final = "atelier"

RGB_CHANNELS: Final = 3
OUTER_KERNEL: Final = 9  # the first and last convolutions
INNER_KERNEL: Final = 3
DOWN_STRIDE: Final = 2
UPSAMPLE_FACTOR: Final = 2
UPSAMPLE_MODE: Final = "nearest"
DOWNSAMPLINGS: Final = 2  # the width doubles at each: width -> 2 width -> 4 width
SIZE_MULTIPLE: Final = DOWN_STRIDE**DOWNSAMPLINGS  # inputs are padded to a multiple of this, outputs cropped back
# ... and to at least this: the 9x9 convolutions' reflection pads of 4 need sides of 5 or more (8, a multiple of 4)
MIN_PADDED_SIDE: Final = 8
FAN_IN_SLOPE: Final = math.sqrt(5.0)  # torch's default Conv2d init (kaiming_uniform_ with a = sqrt(5))
PREVIEW_PADDING: Final = 2  # px between the grid's pictures

DIVERGED: Final = "style training"
DIVERGED_ADVICE: Final = "lower lr or style_weight"

# Parameter names of the saved network (TransformerNet.state_dict): the first convolution gives the width,
# the residual blocks are numbered res.<i>.
FIRST_CONV_WEIGHT: Final = "head.0.conv.weight"
RESIDUAL_PREFIX: Final = "res."


class ConvLayer(nn.Module):
    """Reflection padding then a convolution: the output is ceil(input / stride) on each side."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, device="meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad, convolve."""
        return self.conv(self.pad(x))


class UpsampleConvLayer(nn.Module):
    """Nearest 2x upsampling then a reflection-padded convolution (no transposed convolution)."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=UPSAMPLE_FACTOR, mode=UPSAMPLE_MODE)
        self.conv = ConvLayer(in_channels, out_channels, kernel=kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample, convolve."""
        return self.conv(self.up(x))


class ResidualBlock(nn.Module):
    """x + IN(conv(ReLU(IN(conv(x))))), with 3x3 reflection-padded convolutions (He et al. 2016, as Johnson)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvLayer(channels, channels, kernel=INNER_KERNEL),  # B x C x h x w
            nn.InstanceNorm2d(channels, affine=True),
            nn.ReLU(),
            ConvLayer(channels, channels, kernel=INNER_KERNEL),  # B x C x h x w
            nn.InstanceNorm2d(channels, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's residual added to its input."""
        return x + self.body(x)


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in [0, 1].

    The init is torch's default Conv2d init drawn from a private generator seeded with ``seed``
    (instance norms start at scale 1, shift 0); the global RNG is left alone.
    """

    def __init__(self, *, width: int, residual_blocks: int, seed: int = 0) -> None:
        super().__init__()
        if width < 1 or residual_blocks < 1:
            raise ValueError(f"width and residual_blocks must be positive, got {width} and {residual_blocks}")
        self.width = width
        self.residual_blocks = residual_blocks
        mid, deep = DOWN_STRIDE * width, DOWN_STRIDE**DOWNSAMPLINGS * width
        self.head = nn.Sequential(
            ConvLayer(RGB_CHANNELS, width, kernel=OUTER_KERNEL),  # B x w x H x W
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(),
            ConvLayer(width, mid, kernel=INNER_KERNEL, stride=DOWN_STRIDE),  # B x 2w x H/2 x W/2
            nn.InstanceNorm2d(mid, affine=True),
            nn.ReLU(),
            ConvLayer(mid, deep, kernel=INNER_KERNEL, stride=DOWN_STRIDE),  # B x 4w x H/4 x W/4
            nn.InstanceNorm2d(deep, affine=True),
            nn.ReLU(),
        )
        self.res = nn.Sequential(*(ResidualBlock(deep) for _ in range(residual_blocks)))  # B x 4w x H/4 x W/4
        self.tail = nn.Sequential(
            UpsampleConvLayer(deep, mid, kernel=INNER_KERNEL),  # B x 2w x H/2 x W/2
            nn.InstanceNorm2d(mid, affine=True),
            nn.ReLU(),
            UpsampleConvLayer(mid, width, kernel=INNER_KERNEL),  # B x w x H x W
            nn.InstanceNorm2d(width, affine=True),
            nn.ReLU(),
            ConvLayer(width, RGB_CHANNELS, kernel=OUTER_KERNEL),  # B x 3 x H x W (logits)
        )
        self.to_empty(device="cpu")  # the convolutions were built on the meta device: no global RNG drawn
        self._init(torch.Generator().manual_seed(seed))

    def _init(self, generator: torch.Generator) -> None:
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_uniform_(module.weight, a=FAN_IN_SLOPE, generator=generator)
                    fan_in = module.weight[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    if module.bias is not None:
                        nn.init.uniform_(module.bias, -bound, bound, generator=generator)
                elif isinstance(module, nn.InstanceNorm2d):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The styled image (B, 3, H, W) in [0, 1] of ``image`` (B, 3, H, W) in [0, 1]."""
        height, width = image.shape[-2:]
        x = pad_to_multiple(image, SIZE_MULTIPLE)  # B x 3 x H' x W', multiples of 4
        x = self.head(x)  # B x 4w x H'/4 x W'/4
        x = self.res(x)  # B x 4w x H'/4 x W'/4
        x = self.tail(x)  # B x 3 x H' x W'
        return torch.sigmoid(x[..., :height, :width])  # B x 3 x H x W in [0, 1]


def pad_to_multiple(image: torch.Tensor, multiple: int, *, minimum: int = MIN_PADDED_SIDE) -> torch.Tensor:
    """``image`` padded (bottom, right; reflecting) to sides that are multiples of ``multiple``, >= ``minimum``."""
    height, width = image.shape[-2:]
    pad_h = max(height + -height % multiple, minimum) - height
    pad_w = max(width + -width % multiple, minimum) - width
    if not pad_h and not pad_w:
        return image
    # Reflection needs a pad smaller than the side; tiny inputs repeat their edge instead.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def stylize(net: TransformerNet, images: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 3, H, W) in [0, 1] through ``net`` without gradients: (B, 3, H, W) in [0, 1]."""
    with torch.no_grad():
        return net(images.to(next(net.parameters()).device))


def model_bytes(net: TransformerNet) -> bytes:
    """The network as safetensors bytes; the metadata's METADATA_KEY holds its width and residual blocks (JSON)."""
    state = {name: value.detach().to("cpu").contiguous() for name, value in net.state_dict().items()}
    about = {"format": MODEL_FORMAT, "method": METHOD, "width": net.width, "residual_blocks": net.residual_blocks}
    # One key: safetensors writes several in a random order, and the same network should give the same bytes.
    return save_safetensors(state, metadata={METADATA_KEY: json.dumps(about, sort_keys=True)})


def load_model(data: bytes) -> TransformerNet:
    """A TransformerNet from ``model_bytes``' safetensors bytes; ValueError for anything else (never unpickles)."""
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, OverflowError, TypeError) as exc:  # not a safetensors file at all
        raise ValueError(f"not a style model: the bytes are not a safetensors file ({exc})") from exc
    first = state.get(FIRST_CONV_WEIGHT)
    if first is None or first.dim() != 4 or first.shape[1] != RGB_CHANNELS:
        raise ValueError(
            f"not a style model: the safetensors file lacks a {FIRST_CONV_WEIGHT} of shape (width, 3, 9, 9)"
        )
    width = int(first.shape[0])
    blocks = len({name.split(".")[1] for name in state if name.startswith(RESIDUAL_PREFIX)})
    if width > MAX_WIDTH or blocks > MAX_RESIDUAL_BLOCKS:
        raise ValueError(
            f"not a style model: width {width} and {blocks} residual blocks exceed the limits "
            f"({MAX_WIDTH}, {MAX_RESIDUAL_BLOCKS})"
        )
    not_float = sorted(name for name, value in state.items() if not value.is_floating_point())
    if not_float:
        raise ValueError(f"not a style model: tensors {not_float[:3]} are not floating point")
    try:
        net = TransformerNet(width=width, residual_blocks=max(blocks, 1))
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:  # missing, unexpected or misshapen tensors
        raise ValueError(
            f"not a style model: the safetensors file does not fit a TransformerNet of width {width} and "
            f"{blocks} residual blocks ({exc})"
        ) from exc
    return net.eval()


@dataclass
class _Resume:
    step: int
    net: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    metrics: dict[str, float]


def train_johnson(
    params: StyleTrainParams,
    content: ContentSet,
    styles: list[Image.Image],
    hooks: TrainHooks,
    *,
    device: str | torch.device = "cpu",
    weights_dir: Path | None = None,
    allow_download: bool = False,
    weights_state: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a transformer network; save previews, the model and its card; returns the summary.

    ``weights_state`` is the state dict of the upload that ``params.weights`` names.
    """
    if len(styles) != len(params.styles):
        raise ValueError(f"got {len(styles)} style images for {len(params.styles)} styles in params")
    dev = torch.device(device)

    # -- Loss network and targets: style Grams once, content features per batch -------------
    encoder, fast = build_loss_encoder(
        params,
        hooks,
        device=dev,
        weights_dir=weights_dir,
        allow_download=allow_download,
        weights_state=weights_state,
    )
    encode = encode_on(fast, encoder)
    encode_content = encode_on(fast, _truncated(encoder, params.content_layers))
    with torch.no_grad():
        style_grams = [
            gram_targets(encode(to_tensor(s, params.style_side()).to(dev)), params.style_layers) for s in styles
        ]
    style_loss = StyleLoss(
        style_grams, params.blend(), params.style_layers, params.style_layer_weights, params.style_weight
    )
    tv_loss = TotalVariationLoss(params.tv_weight)
    previews = preview_pictures(params.size).to(dev)  # N x 3 x size x size

    # -- Network and optimiser: fresh, or from the checkpoint ------------------------------------
    net = TransformerNet(width=params.width, residual_blocks=params.residual_blocks, seed=params.seed).to(dev)
    optimizer = torch.optim.Adam(net.parameters(), lr=params.lr, fused=fused_adam(dev))
    resume = _load_checkpoint(hooks.load_checkpoint())
    start = 0
    if resume is not None:
        net.load_state_dict(resume.net)
        optimizer.load_state_dict(resume.optimizer)
        start = resume.step

    names = tuple(METRIC_NAMES.values())
    watch = DivergenceWatch(names, dev, what=DIVERGED, advice=DIVERGED_ADVICE)
    log: MetricLog[None] = MetricLog(
        names,
        watch,
        lambda step, metrics, _: hooks.report_metrics(step, metrics),
        last=dict(resume.metrics) if resume is not None else None,
    )

    # -- Training loop: no host sync per step (losses are read back per flush) ---------------
    for step in range(start + 1, params.steps + 1):
        batch = to_device(content.batch(step, batch_size=params.batch_size, size=params.size, seed=params.seed), dev)
        with torch.no_grad():
            content_loss = ContentLoss(encode_content(batch), params.content_layers, params.content_weight)
        styled = net(batch)  # B x 3 x size x size
        losses = PerceptualLoss(content_loss, style_loss, tv_loss)(styled, encode(styled))
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()

        values = torch.stack([losses[key].detach().float() for key in METRIC_NAMES])
        watch.observe(step, values)
        hooks.report_progress(step, params.steps)  # host-side bookkeeping, no sync
        if step % params.log_every == 0 or step == params.steps:
            log.add(step, values, (), None)
        preview = params.preview_every is not None and step % params.preview_every == 0
        checkpoint = step % params.checkpoint_every == 0
        reason = hooks.should_stop()
        if preview or checkpoint or reason is not None or log.due():
            log.flush()  # a diverged network is never previewed or checkpointed
        if preview:
            _save_preview(hooks, PREVIEW_ARTIFACT.format(step=step), net, previews)
        if checkpoint or reason is not None:
            hooks.save_checkpoint(step, _checkpoint_bytes(step, net, optimizer, params, log.last))
        if reason is not None:
            raise StopRequested(reason, step)
    log.flush()

    # -- Outputs: final preview, the model and its card ------------------------------------------
    _save_preview(hooks, FINAL_PREVIEW_ARTIFACT, net, previews)
    card = {
        "method": METHOD,
        "styles": list(params.styles),
        "blend": params.blend(),
        "steps": params.steps,
        "width": params.width,
        "residual_blocks": params.residual_blocks,
        "size": params.size,
        "final_metrics": log.last,
        "model": MODEL_ARTIFACT,
        "params": params.card(),
    }
    hooks.save_artifact(MODEL_ARTIFACT, model_bytes(net), kind=OUTPUT_KIND, content_type=BINARY_CONTENT_TYPE)
    hooks.save_artifact(
        CARD_ARTIFACT, json.dumps(card, indent=2).encode(), kind=OUTPUT_KIND, content_type=JSON_CONTENT_TYPE
    )
    return {
        "method": METHOD,
        "steps": params.steps,
        "resumed_from_step": resume.step if resume is not None and resume.step else None,
        "width": params.width,
        "residual_blocks": params.residual_blocks,
        "size": params.size,
        "content_pictures": len(content),
        "weights": params.weights,
        "final_metrics": log.last,
        "precision": fast.precision,
        "artifacts": [MODEL_ARTIFACT, CARD_ARTIFACT, FINAL_PREVIEW_ARTIFACT],
    }


def _truncated(encoder: Encoder, layers: list[str]) -> Encoder:
    """An encoder sharing ``encoder``'s modules, cut after the deepest of ``layers`` (a cheaper target pass)."""
    children = list(encoder.body.named_children())
    names = [name for name, _ in children]
    depth = max(names.index(layer) for layer in layers) + 1
    cut = Encoder(nn.Sequential(OrderedDict(children[:depth])), layers).to(encoder.mean.device)
    cut.requires_grad_(False)
    return cut.eval()


def _save_preview(hooks: TrainHooks, name: str, net: TransformerNet, previews: torch.Tensor) -> None:
    """The preview pictures (top row) and the network's outputs (bottom row) as one PNG grid."""
    pictures = torch.cat([previews, stylize(net, previews)])  # 2N x 3 x size x size
    grid = make_grid(pictures.cpu(), nrow=len(previews), padding=PREVIEW_PADDING)  # 3 x 2 size x N size
    hooks.save_artifact(name, to_png(grid), kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)


def _checkpoint_bytes(
    step: int,
    net: TransformerNet,
    optimizer: torch.optim.Optimizer,
    params: StyleTrainParams,
    metrics: dict[str, float],
) -> bytes:
    """Serialise the resumable state; loadable with ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(
        {
            "version": CHECKPOINT_VERSION,
            "step": step,
            "net": {name: value.detach().cpu() for name, value in net.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "metrics": dict(metrics),
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
    if version != CHECKPOINT_VERSION:
        raise ValueError(f"unsupported style.train checkpoint version {version!r} (expected {CHECKPOINT_VERSION})")
    return _Resume(
        step=int(state["step"]), net=state["net"], optimizer=state["optimizer"], metrics=dict(state["metrics"])
    )
