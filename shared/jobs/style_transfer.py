"""style.transfer: Gatys style transfer with content, Gram-matrix style and total-variation losses."""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shared.jobs.params import (
    BUILTIN_IMAGES,
    EVERY_MAX,
    IMAGE_CHOICES,
    MAX_CHECKPOINTS,
    MAX_STYLES,
    MIN_STYLE_SIZE,
    JobParams,
    Reference,
    every_field,
    every_problems,
    is_stored,
    is_upload_ref,
    preset_filled,
    refuse,
    runtime_field,
    scale_unset_every,
)
from shared.jobs.vgg_layers import VggNetwork, layer_names

STYLE_PRESETS: dict[str, dict[str, Any]] = {
    # The lesson's notebook: VGG16, content at block 4, style at the first layer of every
    # block with weights falling with depth, and Adam on the pixels.
    "lesson": {
        "network": "vgg16",
        "content_layers": ["relu4_2"],
        "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
        "style_layer_weights": [1.0, 0.75, 0.2, 0.2, 0.2],
        "pooling": "max",
        "optimizer": "adam",
        "lr": 0.003,
        "init": "content",
    },
    # Gatys et al. 2016: VGG19 with average pooling, content conv4_2, style conv1_1..conv5_1
    # (Caffe's in-place ReLUs make these the rectified activations), white-noise init, L-BFGS.
    "gatys": {
        "network": "vgg19",
        "content_layers": ["relu4_2"],
        "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
        "style_layer_weights": None,
        "pooling": "avg",
        "optimizer": "lbfgs",
        "lr": 1.0,
        "init": "noise",
    },
}
DEFAULT_CONTENT_LAYERS = ("relu4_2",)
DEFAULT_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEFAULT_LR = {"adam": 0.05, "lbfgs": 1.0}
STYLE_WEIGHT_KINDS = ("imagenet", "random")
MAX_STYLE_SCALE = 4.0
MAX_SCALES = 6
MAX_STYLE_STEPS = 100_000
MAX_SNAPSHOTS = 500


class StyleTransferParams(JobParams):
    """Gatys neural style transfer: optimise an image against content and Gram-style losses."""

    preset: Literal["lesson", "gatys"] | None = Field(
        default=None,
        description="Fill in network, layers, layer weights, pooling, optimiser, lr and init; "
        "fields given explicitly win. lesson: the lesson notebook's VGG16 + Adam; gatys: the paper's "
        "VGG19 (avg pooling) + L-BFGS from noise.",
    )
    content: str = Field(
        description="A built-in image name or the id of an image upload.", json_schema_extra=IMAGE_CHOICES
    )
    styles: list[Annotated[str, Field(json_schema_extra=IMAGE_CHOICES)]] = Field(
        min_length=1, max_length=MAX_STYLES, description="Style images (names or upload ids)."
    )
    style_blend: list[float] | None = Field(
        default=None, description="One non-negative weight per style image; default: equal weights."
    )
    size: int = Field(default=256, ge=MIN_STYLE_SIZE, description="Output size of the longer side in pixels.")
    scales: list[int] | None = Field(
        default=None,
        max_length=MAX_SCALES,
        description="Coarse-to-fine sizes, increasing and ending at size (e.g. [128, 256]); "
        "steps runs at each. Default: [size]. size defaults to the last scale.",
    )
    steps: int = Field(default=300, ge=1, le=MAX_STYLE_STEPS, description="Optimiser steps (per scale).")
    weights: str = Field(
        default="imagenet",
        description="VGG weights: imagenet (torchvision's ImageNet weights), random (seeded, per-layer "
        "normalised), or the id of a weights upload: a torch.save'd state_dict of the network, with "
        "torchvision's keys (features.<i>.weight/bias) or those of its features module (<i>.weight/bias).",
        examples=["imagenet", "random"],
    )
    network: VggNetwork = Field(default="vgg19", description="Feature network: vgg19 or vgg16.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Encoder arithmetic: auto is bf16 autocast on a CUDA GPU that supports it (features and "
        "losses stay fp32) and fp32 elsewhere; fp32 or bf16 force it.",
    )
    pooling: Literal["max", "avg"] = Field(default="max", description="The network's pooling layers.")
    content_layers: list[str] = Field(
        default=list(DEFAULT_CONTENT_LAYERS), min_length=1, description="Layers of the content loss (e.g. relu4_2)."
    )
    style_layers: list[str] = Field(
        default=list(DEFAULT_STYLE_LAYERS), min_length=1, description="Layers of the style (Gram) loss."
    )
    style_layer_weights: list[float] | None = Field(
        default=None, description="One non-negative weight per style layer; default: 1/len(style_layers) each."
    )
    content_weight: float = Field(default=1.0, ge=0)
    style_weight: float = Field(default=1e4, ge=0)
    tv_weight: float = Field(default=1e-3, ge=0)
    style_scale: float = Field(
        default=1.0, gt=0, le=MAX_STYLE_SCALE, description="Style images are resized to style_scale x the size."
    )
    preserve_colors: bool = Field(
        default=False, description="Luminance-only transfer: the output keeps the content's colours."
    )
    init: Literal["content", "noise", "style-stats"] = Field(
        default="content",
        description="Start from the content image, seeded uniform noise, or noise with the styles' colour statistics.",
    )
    optimizer: Literal["adam", "lbfgs"] = Field(default="adam", description="Adam or L-BFGS on the pixels.")
    lr: float = Field(
        default=DEFAULT_LR["adam"], gt=0, le=10.0, description="Step size; default 0.05 for adam, 1.0 for lbfgs."
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    log_every: int = Field(default=1, ge=1, json_schema_extra=EVERY_MAX)
    checkpoint_every: int = every_field(
        default=50,
        description=f"Checkpoint every N steps (at most {MAX_CHECKPOINTS} a job).",
    )
    snapshot_every: int | None = every_field(
        default=None,
        description=f"Save the image as a snapshots/step-N.png artifact every N steps (at most {MAX_SNAPSHOTS}).",
    )
    max_runtime_s: int | None = runtime_field()

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        filled = preset_filled(data, STYLE_PRESETS, info)
        if "lr" not in filled and filled.get("optimizer") in DEFAULT_LR:
            filled["lr"] = DEFAULT_LR[filled["optimizer"]]
        scales = filled.get("scales")
        if "size" not in filled and isinstance(scales, list) and scales and all(isinstance(s, int) for s in scales):
            filled["size"] = max(scales)
        return filled

    @field_validator("content")
    @classmethod
    def _known_content(cls, value: str) -> str:
        return _image_ref(value)

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: str) -> str:
        if value in STYLE_WEIGHT_KINDS or is_upload_ref(value):
            return value
        raise ValueError(
            f"unknown weights {value!r}: use one of {list(STYLE_WEIGHT_KINDS)} or the id of a weights upload"
        )

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, value: list[str]) -> list[str]:
        return [_image_ref(v) for v in value]

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _known_layers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return known_layers(value, info)

    @field_validator("style_layer_weights")
    @classmethod
    def _one_weight_per_layer(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        return one_weight_per_layer(value, info)

    @field_validator("scales")
    @classmethod
    def _increasing_scales(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("scales needs at least one size (or leave it out)")
        if any(s < MIN_STYLE_SIZE for s in value):
            raise ValueError(f"every scale must be at least {MIN_STYLE_SIZE} px, got {value}")
        if any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError(f"scales must be strictly increasing, got {value}")
        return value

    @model_validator(mode="after")
    def _blend_matches(self, info: ValidationInfo) -> StyleTransferParams:
        if self.style_blend is not None:
            check_blend(self.style_blend, self.styles)
        if self.scales is not None and self.scales[-1] != self.size:
            raise ValueError(f"scales must end at size ({self.size} px), got {self.scales}")
        if not is_stored(info):  # checked at submit: a stored job parses as it was stored
            total = self.total_steps()
            scale_unset_every(self, total, {"checkpoint_every": MAX_CHECKPOINTS})
            refuse(
                self,
                every_problems("snapshot_every", self.snapshot_every, total, MAX_SNAPSHOTS, "snapshots")
                + every_problems("checkpoint_every", self.checkpoint_every, total, MAX_CHECKPOINTS, "checkpoints")
                + every_problems("log_every", self.log_every, total),
            )
        return self

    def references(self) -> list[Reference]:
        """Uploaded content and style images, and an uploaded weights file."""
        named = [("params.content", self.content, "images")]
        named += [(f"params.styles.{i}", ref, "images") for i, ref in enumerate(self.styles)]
        named.append(("params.weights", self.weights, "weights"))
        return [Reference(field=f, ref=r, upload_kind=k) for f, r, k in named if is_upload_ref(r)]

    def server_limit_problems(self, *, max_style_size: int) -> list[tuple[str, str]]:
        """The image sizes against this server's ``max_style_size``."""
        if self.size > max_style_size:
            return [("params.size", f"{self.size} px is over this server's limit of {max_style_size} px")]
        if self.largest_style_size() > max_style_size:
            return [
                (
                    "params.style_scale",
                    f"style images at {self.style_scale} x {self.size} px = {self.largest_style_size()} px are "
                    f"over this server's limit of {max_style_size} px",
                )
            ]
        return []

    def blend(self) -> list[float]:
        """Normalised per-style weights."""
        return normalised_blend(self.style_blend, len(self.styles))

    def scale_sizes(self) -> list[int]:
        """The sizes to optimise at, coarse to fine; the last is ``size``."""
        return list(self.scales) if self.scales is not None else [self.size]

    def total_steps(self) -> int:
        """Optimiser steps over every scale."""
        return self.steps * len(self.scale_sizes())

    def largest_style_size(self) -> int:
        """The longer side, in pixels, of the largest resized style image."""
        return max(1, round(self.size * self.style_scale))


def known_layers(value: list[str], info: ValidationInfo) -> list[str]:
    """``value`` if every layer is one of ``info.data["network"]``'s, each once (a field validator's body)."""
    network = info.data.get("network")
    if network is None:  # the network itself failed validation; that error is reported
        return value
    known = layer_names(network)
    unknown = [layer for layer in value if layer not in known]
    if unknown:
        convs = [name for name in known if name.startswith("conv")]
        raise ValueError(
            f"unknown {network} layer(s) {unknown}: {network} has {convs[0]} ... {convs[-1]}, "
            "each followed by its relu (e.g. relu4_2), and pool1 ... pool5"
        )
    if len(set(value)) != len(value):
        raise ValueError(f"layers are listed twice in {value}")
    return value


def one_weight_per_layer(value: list[float] | None, info: ValidationInfo) -> list[float] | None:
    """``value`` if it has one non-negative weight per style layer, not all zero (a field validator's body)."""
    if value is None:
        return value
    layers = info.data.get("style_layers")
    if layers is not None and len(value) != len(layers):
        raise ValueError(f"{len(value)} weights for {len(layers)} style_layers; give one per layer")
    if any(w < 0 for w in value) or sum(value) <= 0:
        raise ValueError("style_layer_weights must be non-negative and not all zero")
    return value


def check_blend(blend: list[float], styles: list[str]) -> None:
    """One non-negative weight per style, not all zero."""
    if len(blend) != len(styles):
        raise ValueError(f"style_blend has {len(blend)} weights but styles has {len(styles)} images")
    if any(w < 0 for w in blend) or sum(blend) <= 0:
        raise ValueError("style_blend weights must be non-negative and not all zero")


def normalised_blend(blend: list[float] | None, count: int) -> list[float]:
    """Per-style weights summing to 1 (equal when ``blend`` is None)."""
    raw = blend or [1.0] * count
    total = sum(raw)
    return [w / total for w in raw]


def image_ref(value: str) -> str:
    """A built-in image name or an upload id, else a ValueError naming the choices."""
    return _image_ref(value)


def _image_ref(value: str) -> str:
    if value in BUILTIN_IMAGES or is_upload_ref(value):
        return value
    raise ValueError(f"unknown image {value!r}: use one of {list(BUILTIN_IMAGES)} or an upload id")
