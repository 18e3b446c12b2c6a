"""style.train, method adain: arbitrary style transfer with adaptive instance normalisation (Huang & Belongie 2017).

A frozen VGG encoder f (VGG19 in the paper, up to relu4_1) and a trained decoder g. ``adain`` gives the
content features the style features' channel-wise mean and standard deviation, t = AdaIN(f(c), f(s)), and
g maps t back to a picture. Nothing is trained per style, so one model styles with any style picture, and
the picture's style can be interpolated: t = sum_i w_i AdaIN(f(c), f(s_i)) between styles, and
t = alpha t + (1 - alpha) f(c) towards the content (``stylize_adain``).

``Decoder`` mirrors the encoder as in the paper: every 3x3 convolution of VGG19 up to relu4_1 in reverse
(reflection padding 1, ReLU after all but the last), every 2x2 pooling a nearest 2x upsampling, no
normalisation; ``width`` is its base channels (64: the paper's 512 -> 256 -> 128 -> 64 -> 3). Its output
is not squashed in training (as in the paper); applying clamps it to [0, 1].

``train_adain`` mirrors style.train's johnson loop (workers/style/johnson.py) and talks to the outside only
through ``TrainHooks``. Per step it draws a content batch and a style batch (``ContentSet.batch``, pure
functions of (seed, step); the style crops draw from seed + STYLE_SEED_OFFSET, never a content seed), runs
the encoder once over both (no gradient), the decoder once over t and the encoder once over its output.
The loss is the paper's: content_weight * MSE(f(g(t)), t) at relu4_1, plus style_weight * the sum over
relu1_1 ... relu4_1 of the MSEs of the channel means and of the channel standard deviations of f(g(t))
and f(s). A checkpoint holds the decoder, Adam's state, the step and the last reported losses (the encoder
is rebuilt from the params); the decoder's init comes from a private generator seeded with
``params.seed``, so on CPU a stopped and resumed run ends bit-identical to an uninterrupted one.

``model.safetensors`` holds the encoder (``encoder.*``) and the decoder (``decoder.*``), so applying
needs neither VGG weights nor a download; ``load_adain_model`` reads it back without unpickling.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Self

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn
from torchvision.utils import make_grid

from shared.jobs.style_train import (
    CARD_ARTIFACT,
    FINAL_PREVIEW_ARTIFACT,
    MAX_WIDTH,
    MIN_WIDTH,
    MODEL_ARTIFACT,
    PREVIEW_ARTIFACT,
    StyleTrainParams,
)
from shared.jobs.vgg_layers import NETWORKS, layer_names
from workers.hooks import StopRequested, TrainHooks
from workers.style.content import ContentSet, preview_pictures
from workers.style.images import to_png, to_tensor
from workers.style.johnson import (
    DIVERGED,
    DIVERGED_ADVICE,
    INNER_KERNEL,
    JSON_CONTENT_TYPE,
    METADATA_KEY,
    PREVIEW_PADDING,
    RGB_CHANNELS,
    UPSAMPLE_FACTOR,
    UPSAMPLE_MODE,
    ConvLayer,
    pad_to_multiple,
)
from workers.style.model_file import model_about
from workers.style.transfer import METRIC_NAMES, EncodeFn, build_loss_encoder, encode_on
from workers.style.vgg import FEATURES_PREFIX, POOLINGS, WEIGHTS_UPLOADED, Encoder, WeightsUnavailableError, build_vgg
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

METHOD: Final = "adain"
MODEL_FORMAT: Final = "atelier.adain.v1"  # safetensors metadata: what the file holds
CHECKPOINT_VERSION: Final = 1

# The paper's encoder layers: t at relu4_1, the style statistics at relu1_1 ... relu4_1.
CONTENT_LAYER: Final = "relu4_1"
STYLE_LAYERS: Final = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
ENCODER_LAYERS: Final = STYLE_LAYERS  # relu4_1 is the deepest: the encoder is cut there
ENCODER_CHANNELS: Final = 512  # relu4_1's channels (VGG16 and VGG19 alike)
POOLINGS_TO_CONTENT: Final = 3  # 2x2 poolings before relu4_1
SIZE_MULTIPLE: Final = UPSAMPLE_FACTOR**POOLINGS_TO_CONTENT  # pictures are padded to a multiple of 8, outputs cropped
# ... and to at least this: the decoder's first reflection pad of 1 needs relu4_1 maps of 2 or more a side
MIN_PADDED_SIDE: Final = 2 * SIZE_MULTIPLE
ADAIN_EPS: Final = 1e-5  # added to the variance before its square root (the paper's code)
STYLE_SEED_OFFSET: Final = 2**31  # style crops draw from seed + this: never a content seed (seeds are < 2**31)
LOSS_KEYS: Final = ("content", "style", "total")  # reported as METRIC_NAMES[key]: no total variation here
PIXEL_MIN: Final = 0.0
PIXEL_MAX: Final = 1.0
FEATURE_DIMS: Final = 4  # B x C x H x W
SPATIAL: Final = (-2, -1)
FAN_IN: Final = "fan_in"  # the decoder's He init
RELU: Final = "relu"
LINEAR: Final = "linear"  # the last convolution: no ReLU after it
ENCODER_BODY_PREFIX: Final = "encoder.body."  # the saved encoder's convolutions: encoder.body.<layer>.<kind>


# -- AdaIN and the paper's style statistics ----------------------------------------------------------


def mean_std(features: torch.Tensor, eps: float = ADAIN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel-wise mean and standard deviation (B, C, 1, 1) of ``features`` (B, C, H, W), per sample.

    The variance is the population one (a 1 x 1 map has variance 0, not NaN), plus ``eps``.
    """
    if features.dim() != FEATURE_DIMS:
        raise ValueError(f"expected features (B, C, H, W), got shape {tuple(features.shape)}")
    mean = features.mean(dim=SPATIAL, keepdim=True)  # B x C x 1 x 1
    var = features.var(dim=SPATIAL, keepdim=True, correction=0)  # B x C x 1 x 1
    return mean, (var + eps).sqrt()


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = ADAIN_EPS) -> torch.Tensor:
    """AdaIN: ``content`` (B, C, H, W) normalised per sample and channel, then given ``style``'s mean and std.

    ``style`` is (B, C, h, w) or (1, C, h, w), one style for every content sample.
    """
    content_mean, content_std = mean_std(content, eps)
    style_mean, style_std = mean_std(style, eps)
    return (content - content_mean) / content_std * style_std + style_mean  # B x C x H x W


def style_statistics_loss(
    features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], layers: Sequence[str] = STYLE_LAYERS
) -> torch.Tensor:
    """The paper's style loss (unweighted): sum over ``layers`` of MSE(means) + MSE(stds), per sample pairs."""
    terms = []
    for layer in layers:
        mean, std = mean_std(features[layer])
        target_mean, target_std = mean_std(targets[layer])
        terms += [F.mse_loss(mean, target_mean.expand_as(mean)), F.mse_loss(std, target_std.expand_as(std))]
    return torch.stack(terms).sum()


# -- The decoder and the model ---------------------------------------------------------------------


class Decoder(nn.Module):
    """The paper's decoder at base width ``width``: relu4_1 features (B, 512, h, w) -> (B, 3, 8h, 8w), unbounded.

    The init is He's, drawn from a private generator seeded with ``seed``; the global RNG is left alone.
    """

    def __init__(self, *, width: int, seed: int = 0) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.width = width
        mid, deep = UPSAMPLE_FACTOR * width, UPSAMPLE_FACTOR**2 * width  # 128, 256 at the paper's width 64
        self.body = nn.Sequential(
            # mirror of conv4_1 and pool3
            ConvLayer(ENCODER_CHANNELS, deep, kernel=INNER_KERNEL),  # B x 4w x h x w
            nn.ReLU(),
            nn.Upsample(scale_factor=UPSAMPLE_FACTOR, mode=UPSAMPLE_MODE),  # B x 4w x 2h x 2w
            # mirror of conv3_4 ... conv3_1 and pool2
            ConvLayer(deep, deep, kernel=INNER_KERNEL),  # B x 4w x 2h x 2w
            nn.ReLU(),
            ConvLayer(deep, deep, kernel=INNER_KERNEL),  # B x 4w x 2h x 2w
            nn.ReLU(),
            ConvLayer(deep, deep, kernel=INNER_KERNEL),  # B x 4w x 2h x 2w
            nn.ReLU(),
            ConvLayer(deep, mid, kernel=INNER_KERNEL),  # B x 2w x 2h x 2w
            nn.ReLU(),
            nn.Upsample(scale_factor=UPSAMPLE_FACTOR, mode=UPSAMPLE_MODE),  # B x 2w x 4h x 4w
            # mirror of conv2_2, conv2_1 and pool1
            ConvLayer(mid, mid, kernel=INNER_KERNEL),  # B x 2w x 4h x 4w
            nn.ReLU(),
            ConvLayer(mid, width, kernel=INNER_KERNEL),  # B x w x 4h x 4w
            nn.ReLU(),
            nn.Upsample(scale_factor=UPSAMPLE_FACTOR, mode=UPSAMPLE_MODE),  # B x w x 8h x 8w
            # mirror of conv1_2, conv1_1
            ConvLayer(width, width, kernel=INNER_KERNEL),  # B x w x 8h x 8w
            nn.ReLU(),
            ConvLayer(width, RGB_CHANNELS, kernel=INNER_KERNEL),  # B x 3 x 8h x 8w
        )
        self.to_empty(device="cpu")  # the convolutions were built on the meta device: no global RNG drawn
        _init_convs(self, torch.Generator().manual_seed(seed))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The picture (B, 3, 8h, 8w) of relu4_1 features (B, 512, h, w)."""
        return self.body(features)


def _init_convs(module: nn.Module, generator: torch.Generator) -> None:
    """He init (normal, fan-in; the last convolution linear), zero biases, drawn from ``generator``.

    The paper's code keeps torch's default init (He uniform with a = sqrt(5), a third of He's variance): through
    nine plain ReLU convolutions its output starts near 0 and short trainings lose whole layers to dead ReLUs,
    where He's init keeps every layer's activations at the input's scale.
    """
    convs = [conv for conv in module.modules() if isinstance(conv, nn.Conv2d)]
    with torch.no_grad():
        for index, conv in enumerate(convs):
            last = index == len(convs) - 1
            gain: Literal["linear", "relu"] = LINEAR if last else RELU
            nn.init.kaiming_normal_(conv.weight, mode=FAN_IN, nonlinearity=gain, generator=generator)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)


class AdainModel(nn.Module):
    """A frozen VGG encoder up to relu4_1 (kept in eval mode) and a decoder."""

    def __init__(self, *, encoder: Encoder, decoder: Decoder, network: str, pooling: str) -> None:
        super().__init__()
        if set(encoder.layers) != set(ENCODER_LAYERS):
            raise ValueError(f"an AdaIN encoder gives exactly {list(ENCODER_LAYERS)}, not {list(encoder.layers)}")
        encoder.requires_grad_(False)
        self.encoder = encoder.eval()
        self.decoder = decoder
        self.network = network
        self.pooling = pooling

    @property
    def width(self) -> int:
        """The decoder's base width."""
        return self.decoder.width

    def train(self, mode: bool = True) -> Self:
        """Set the decoder's mode; the encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The encoder's relu1_1 ... relu4_1 of ``image`` (B, 3, H, W) in [0, 1]."""
        feats: dict[str, torch.Tensor] = self.encoder(image)
        return feats

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """relu4_1 features (B, 512, H/8, W/8) of ``image`` (B, 3, H, W) in [0, 1]."""
        return self.features(image)[CONTENT_LAYER]

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder's picture (B, 3, 8h, 8w), unbounded, of relu4_1 features (B, 512, h, w)."""
        decoded: torch.Tensor = self.decoder(features)
        return decoded


# -- Applying ---------------------------------------------------------------------------------------


def stylize_adain(
    model: AdainModel,
    content: torch.Tensor,
    styles: list[torch.Tensor],
    *,
    weights: list[float] | None = None,
    alpha: float = 1.0,
) -> torch.Tensor:
    """``content`` (1, 3, H, W) in [0, 1] in the (weighted) styles of ``styles`` (1, 3, h, w), at strength
    ``alpha``: (1, 3, H, W) in [0, 1], without gradients."""
    if content.dim() != FEATURE_DIMS or content.shape[:2] != (1, RGB_CHANNELS):
        raise ValueError(f"expected one content picture (1, 3, H, W), got shape {tuple(content.shape)}")
    if not styles:
        raise ValueError("at least one style picture is needed")
    for style in styles:
        if style.dim() != FEATURE_DIMS or style.shape[:2] != (1, RGB_CHANNELS) or min(style.shape[-2:]) < SIZE_MULTIPLE:
            raise ValueError(
                f"expected style pictures (1, 3, h, w) of at least {SIZE_MULTIPLE} px a side, got {tuple(style.shape)}"
            )
    shares = _normalised(weights, len(styles))
    if not PIXEL_MIN <= alpha <= PIXEL_MAX:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    device = next(model.decoder.parameters()).device
    height, width = content.shape[-2:]
    with torch.no_grad():
        padded = pad_to_multiple(content.to(device), SIZE_MULTIPLE, minimum=MIN_PADDED_SIDE)  # 1 x 3 x H' x W'
        feats = model.encode(padded)  # 1 x 512 x H'/8 x W'/8
        target = torch.zeros_like(feats)
        for share, style in zip(shares, styles, strict=True):
            target = target + share * adain(feats, model.encode(style.to(device)))  # 1 x 512 x H'/8 x W'/8
        target = alpha * target + (1.0 - alpha) * feats
        styled = model.decode(target)  # 1 x 3 x H' x W'
        return styled[..., :height, :width].clamp(PIXEL_MIN, PIXEL_MAX)  # 1 x 3 x H x W


def _normalised(weights: list[float] | None, count: int) -> list[float]:
    """``weights`` divided by their sum (equal shares when None); ValueError unless one non-negative each."""
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {count} non-negative style weights, not all zero; got {weights}")
    total = sum(weights)
    return [w / total for w in weights]


# -- The model file ---------------------------------------------------------------------------------


def adain_model_bytes(model: AdainModel) -> bytes:
    """The encoder and decoder as safetensors bytes; METADATA_KEY holds the model's description (sorted JSON)."""
    state = {name: value.detach().to("cpu").contiguous() for name, value in model.state_dict().items()}
    about = {
        "format": MODEL_FORMAT,
        "method": METHOD,
        "width": model.width,
        "network": model.network,
        "pooling": model.pooling,
        "encoder_layers": list(ENCODER_LAYERS),
    }
    # One key: safetensors writes several in a random order, and the same model should give the same bytes.
    return save_safetensors(state, metadata={METADATA_KEY: json.dumps(about, sort_keys=True)})


def load_adain_model(data: bytes) -> AdainModel:
    """An AdainModel from ``adain_model_bytes``' safetensors bytes; ValueError for anything else (never unpickles)."""
    about = model_about(data)
    width, network, pooling = about.get("width"), about.get("network"), about.get("pooling")
    if about.get("format") != MODEL_FORMAT or about.get("method") != METHOD:
        raise ValueError(f"not a style model: {MODEL_FORMAT} expected, the file says {about.get('format')!r}")
    if not isinstance(width, int) or not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"not a style model: width {width!r} is not in [{MIN_WIDTH}, {MAX_WIDTH}]")
    if network not in NETWORKS or pooling not in POOLINGS or about.get("encoder_layers") != list(ENCODER_LAYERS):
        raise ValueError(
            f"not a style model: encoder {network!r}/{pooling!r} at {about.get('encoder_layers')!r} is not one of "
            f"{list(NETWORKS)}/{list(POOLINGS)} at {list(ENCODER_LAYERS)}"
        )
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, OverflowError, TypeError) as exc:
        raise ValueError(f"not a style model: the bytes are not a safetensors file ({exc})") from exc
    not_float = sorted(name for name, value in state.items() if not value.is_floating_point())
    if not_float:
        raise ValueError(f"not a style model: tensors {not_float[:3]} are not floating point")
    try:
        encoder = build_vgg(
            str(network),
            WEIGHTS_UPLOADED,
            seed=0,
            layers=ENCODER_LAYERS,
            pooling=str(pooling),
            state=_torchvision_keyed(state, str(network)),
        )
        model = AdainModel(encoder=encoder, decoder=Decoder(width=width), network=str(network), pooling=str(pooling))
        model.load_state_dict(state, strict=True)
    except (WeightsUnavailableError, RuntimeError, ValueError) as exc:  # missing, unexpected or misshapen tensors
        raise ValueError(
            f"not a style model: the safetensors file does not fit an AdaIN model of width {width} on {network} ({exc})"
        ) from exc
    return model.eval()


def _torchvision_keyed(state: Mapping[str, torch.Tensor], network: str) -> dict[str, torch.Tensor]:
    """The ``encoder.body.<layer>.<kind>`` tensors of ``state`` under torchvision's ``features.<index>.<kind>``."""
    names = layer_names(network)
    keyed = {}
    for key, value in state.items():
        layer, _, kind = key.removeprefix(ENCODER_BODY_PREFIX).partition(".")
        if key.startswith(ENCODER_BODY_PREFIX) and layer in names:
            keyed[f"{FEATURES_PREFIX}{names.index(layer)}.{kind}"] = value
    return keyed


# -- Training ---------------------------------------------------------------------------------------


@dataclass
class _Resume:
    step: int
    decoder: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    metrics: dict[str, float]


def train_adain(
    params: StyleTrainParams,
    content: ContentSet,
    styles: ContentSet,
    hooks: TrainHooks,
    *,
    device: str | torch.device = "cpu",
    weights_dir: Path | None = None,
    allow_download: bool = False,
    weights_state: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Train (or resume) an AdaIN decoder; save previews, the model and its card; returns the summary.

    ``styles`` is the style set: every picture ``params.styles`` names (an upload gives all of its own);
    ``weights_state`` is the state dict of the upload that ``params.weights`` names.
    """
    if len(styles) < len(params.styles):
        raise ValueError(f"got {len(styles)} style pictures for the {len(params.styles)} styles in params")
    dev = torch.device(device)

    # -- Model: the frozen encoder (params' weights, network, pooling) and a fresh decoder -----------
    layers = list(ENCODER_LAYERS)
    encoder, fast = build_loss_encoder(
        params.model_copy(update={"content_layers": layers, "style_layers": layers}),
        hooks,
        device=dev,
        weights_dir=weights_dir,
        allow_download=allow_download,
        weights_state=weights_state,
    )
    model = AdainModel(
        encoder=encoder,
        decoder=Decoder(width=params.width, seed=params.seed).to(dev),
        network=params.network,
        pooling=params.pooling,
    )
    encode = encode_on(fast, model.encoder)
    previews = preview_pictures(params.size).to(dev)  # N x 3 x size x size
    preview_style = to_tensor(styles.pictures[0], params.size).to(dev)  # 1 x 3 x h x w

    # -- Optimiser: fresh, or from the checkpoint -----------------------------------------------------
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=params.lr, fused=fused_adam(dev))
    resume = _load_checkpoint(hooks.load_checkpoint())
    start = 0
    if resume is not None:
        model.decoder.load_state_dict(resume.decoder)
        optimizer.load_state_dict(resume.optimizer)
        start = resume.step

    names = tuple(METRIC_NAMES[key] for key in LOSS_KEYS)
    watch = DivergenceWatch(names, dev, what=DIVERGED, advice=DIVERGED_ADVICE)
    log: MetricLog[None] = MetricLog(
        names,
        watch,
        lambda step, metrics, _: hooks.report_metrics(step, metrics),
        last=dict(resume.metrics) if resume is not None else None,
    )

    # -- Training loop: no host sync per step (losses are read back per flush) -----------------------
    for step in range(start + 1, params.steps + 1):
        size, batch_size = params.size, params.batch_size
        content_batch = to_device(content.batch(step, batch_size=batch_size, size=size, seed=params.seed), dev)
        style_seed = params.seed + STYLE_SEED_OFFSET
        style_batch = to_device(styles.batch(step, batch_size=batch_size, size=size, seed=style_seed), dev)
        losses = _losses(params, model, encode, content_batch, style_batch)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()

        values = torch.stack([losses[key].detach().float() for key in LOSS_KEYS])
        watch.observe(step, values)
        hooks.report_progress(step, params.steps)  # host-side bookkeeping, no sync
        if step % params.log_every == 0 or step == params.steps:
            log.add(step, values, (), None)
        preview = params.preview_every is not None and step % params.preview_every == 0
        checkpoint = step % params.checkpoint_every == 0
        reason = hooks.should_stop()
        if preview or checkpoint or reason is not None or log.due():
            log.flush()  # a diverged decoder is never previewed or checkpointed
        if preview:
            _save_preview(hooks, PREVIEW_ARTIFACT.format(step=step), model, previews, preview_style)
        if checkpoint or reason is not None:
            hooks.save_checkpoint(step, _checkpoint_bytes(step, model.decoder, optimizer, params, log.last))
        if reason is not None:
            raise StopRequested(reason, step)
    log.flush()

    # -- Outputs: final preview, the model and its card ----------------------------------------------
    _save_preview(hooks, FINAL_PREVIEW_ARTIFACT, model, previews, preview_style)
    card = {
        "method": METHOD,
        "styles": list(params.styles),
        "steps": params.steps,
        "width": params.width,
        "network": params.network,
        "pooling": params.pooling,
        "encoder_layers": list(ENCODER_LAYERS),
        "size": params.size,
        "final_metrics": log.last,
        "model": MODEL_ARTIFACT,
        "params": params.card(),
    }
    hooks.save_artifact(MODEL_ARTIFACT, adain_model_bytes(model), kind=OUTPUT_KIND, content_type=BINARY_CONTENT_TYPE)
    hooks.save_artifact(
        CARD_ARTIFACT, json.dumps(card, indent=2).encode(), kind=OUTPUT_KIND, content_type=JSON_CONTENT_TYPE
    )
    return {
        "method": METHOD,
        "steps": params.steps,
        "resumed_from_step": resume.step if resume is not None and resume.step else None,
        "width": params.width,
        "size": params.size,
        "content_pictures": len(content),
        "style_pictures": len(styles),
        "weights": params.weights,
        "network": params.network,
        "final_metrics": log.last,
        "precision": fast.precision,
        "artifacts": [MODEL_ARTIFACT, CARD_ARTIFACT, FINAL_PREVIEW_ARTIFACT],
    }


def _losses(
    params: StyleTrainParams,
    model: AdainModel,
    encode: EncodeFn,
    content_batch: torch.Tensor,
    style_batch: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The paper's weighted content and style losses of one step, and their total."""
    with torch.no_grad():
        feats = encode(torch.cat([content_batch, style_batch]))  # one pass over both: 2B x C x h x w per layer
        style_feats = {layer: value[len(content_batch) :] for layer, value in feats.items()}
        target = adain(feats[CONTENT_LAYER][: len(content_batch)], style_feats[CONTENT_LAYER])  # B x 512 x h x w
    decoded = model.decode(target)  # B x 3 x size' x size' (size' = 8 (size // 8))
    out = encode(decoded)
    content_loss = params.content_weight * F.mse_loss(out[CONTENT_LAYER], target)
    style_loss = params.style_weight * style_statistics_loss(out, style_feats)
    return {"content": content_loss, "style": style_loss, "total": content_loss + style_loss}


def _save_preview(hooks: TrainHooks, name: str, model: AdainModel, previews: torch.Tensor, style: torch.Tensor) -> None:
    """The preview pictures (top row) and their AdaIN outputs in ``style`` (bottom row) as one PNG grid."""
    styled = torch.cat([stylize_adain(model, picture[None], [style]) for picture in previews])  # N x 3 x size x size
    grid = make_grid(torch.cat([previews, styled]).cpu(), nrow=len(previews), padding=PREVIEW_PADDING)
    hooks.save_artifact(name, to_png(grid), kind=SAMPLE_KIND, content_type=PNG_CONTENT_TYPE)


def _checkpoint_bytes(
    step: int,
    decoder: Decoder,
    optimizer: torch.optim.Optimizer,
    params: StyleTrainParams,
    metrics: dict[str, float],
) -> bytes:
    """Serialise the resumable state; loadable with ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(
        {
            "version": CHECKPOINT_VERSION,
            "method": METHOD,
            "step": step,
            "decoder": {name: value.detach().cpu() for name, value in decoder.state_dict().items()},
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
    version, method = state.get("version"), state.get("method")
    if version != CHECKPOINT_VERSION or method != METHOD:
        raise ValueError(
            f"unsupported style.train checkpoint {method!r} version {version!r} "
            f"(expected {METHOD!r} version {CHECKPOINT_VERSION})"
        )
    return _Resume(
        step=int(state["step"]),
        decoder=state["decoder"],
        optimizer=state["optimizer"],
        metrics=dict(state["metrics"]),
    )
