"""style.train: a feed-forward style network (Johnson et al. 2016) trained as a job, for style.apply to reuse.

The network is trained with the perceptual losses of style.transfer (content, Gram style, total variation,
one encoder pass per step) over a set of content pictures, so that one forward pass then styles any picture.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from shared.jobs.params import (
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
from shared.jobs.style_transfer import (
    MAX_STYLE_STEPS,
    STYLE_WEIGHT_KINDS,
    check_blend,
    image_ref,
    known_layers,
    normalised_blend,
    one_weight_per_layer,
)
from shared.jobs.vgg_layers import VggNetwork, layer_names

METHODS = ("johnson", "adain")
CONTENT_BUILTIN = "builtin"  # random crops of the bundled scikit-image / scikit-learn pictures and procedural shapes
# Johnson et al. 2016 (and pytorch/examples' fast_neural_style): VGG16, content at relu2_2, style at relu1_2 ...
# relu4_3.
JOHNSON_CONTENT_LAYERS = ("relu2_2",)
JOHNSON_STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
ADAIN_LAYER = "relu4_1"  # where AdaIN mixes content and style, and the decoder starts
# Huang & Belongie 2017: VGG19 up to relu4_1; the content loss at relu4_1 against the AdaIN target, the style
# loss on the channel means and standard deviations at relu1_1 ... relu4_1, weighted 10 to 1.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "adain": {
        "network": "vgg19",
        "content_layers": ["relu4_1"],
        "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1"],
        "content_weight": 1.0,
        "style_weight": 10.0,
    },
}
DEFAULT_TRAIN_SIZE = 128
DEFAULT_TRAIN_STEPS = 1000
MAX_TRAIN_BATCH = 64
MAX_PREVIEWS = 200
MODEL_ARTIFACT = "model.safetensors"  # the trained network (safetensors: loads without unpickling)
CARD_ARTIFACT = "model.json"  # its card: method, styles, params, final losses
PREVIEW_ARTIFACT = "previews/step-{step:06d}.png"
FINAL_PREVIEW_ARTIFACT = "preview.png"
PREVIEW_PICTURES = 8  # at most this many held-out pictures in a preview grid (workers/style/content.py)
MIN_WIDTH, MAX_WIDTH = 8, 128
MAX_RESIDUAL_BLOCKS = 10


class StyleTrainParams(JobParams):
    """Train a feed-forward style network on content pictures, with one or more style pictures."""

    method: Literal["johnson", "adain"] = Field(
        default="johnson",
        description="johnson: one transformer network per style (blend) (Johnson et al. 2016): reflection "
        "padding, instance norm, residual blocks, upsample-then-convolve. adain: one decoder for any style "
        "(Huang & Belongie 2017): VGG19 up to relu4_1, adaptive instance norm, a trained decoder; styles is "
        "the style set it learns from, and style.apply takes any style pictures. adain fills in its network, "
        "layers and loss weights (fields given explicitly win).",
    )
    styles: list[Annotated[str, Field(json_schema_extra=IMAGE_CHOICES)]] = Field(
        min_length=1, max_length=MAX_STYLES, description="Style pictures (built-in names or image upload ids)."
    )
    style_blend: list[float] | None = Field(
        default=None, description="One non-negative weight per style picture; default: equal weights."
    )
    content: str = Field(
        default=CONTENT_BUILTIN,
        description="The content pictures the network learns on: builtin (random crops of the bundled pictures "
        "and procedural shapes; works offline) or the id of an image upload (a zip or folder of photos).",
    )
    size: int = Field(
        default=DEFAULT_TRAIN_SIZE, ge=MIN_STYLE_SIZE, description="Side of the square training crops in pixels."
    )
    style_size: int | None = Field(
        default=None,
        ge=MIN_STYLE_SIZE,
        description="johnson: side in pixels the style pictures are resized to for their Gram targets (pytorch/"
        "examples' --style-size); default: size. The network paints textures at the pixel scale it learnt, so "
        "set this to the size you will apply the model at when that is larger than the training crops.",
    )
    steps: int = Field(default=DEFAULT_TRAIN_STEPS, ge=1, le=MAX_STYLE_STEPS, description="Optimiser steps.")
    batch_size: int = Field(default=4, ge=1, le=MAX_TRAIN_BATCH, description="Content crops per step.")
    lr: float = Field(default=1e-3, gt=0, le=1.0, description="Adam's step size for the transformer network.")
    width: int = Field(
        default=32,
        ge=MIN_WIDTH,
        le=MAX_WIDTH,
        description="johnson: channels of the network's first layer (Johnson: 32); adain: the decoder's last "
        "block (the paper's: 64, giving 512-256-128-64).",
    )
    residual_blocks: int = Field(
        default=5, ge=1, le=MAX_RESIDUAL_BLOCKS, description="johnson: residual blocks (Johnson: 5)."
    )
    weights: str = Field(
        default="imagenet",
        description="VGG weights of the loss network: imagenet, random (seeded, per-layer normalised), or the id "
        "of a weights upload (a torch.save'd state_dict, as for style.transfer).",
        examples=["imagenet", "random"],
    )
    network: VggNetwork = Field(default="vgg16", description="Loss network: vgg16 (Johnson's) or vgg19.")
    pooling: Literal["max", "avg"] = Field(default="max", description="The loss network's pooling layers.")
    content_layers: list[str] = Field(
        default=list(JOHNSON_CONTENT_LAYERS), min_length=1, description="Layers of the content loss."
    )
    style_layers: list[str] = Field(
        default=list(JOHNSON_STYLE_LAYERS), min_length=1, description="Layers of the style (Gram) loss."
    )
    style_layer_weights: list[float] | None = Field(
        default=None, description="One non-negative weight per style layer; default: 1/len(style_layers) each."
    )
    content_weight: float = Field(default=1.0, ge=0)
    style_weight: float = Field(default=1e5, ge=0)
    tv_weight: float = Field(default=1e-4, ge=0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Loss network arithmetic: auto is bf16 autocast on a CUDA GPU that supports it, fp32 elsewhere.",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    log_every: int = Field(default=1, ge=1, json_schema_extra=EVERY_MAX)
    checkpoint_every: int = every_field(
        default=100, description=f"Checkpoint every N steps (at most {MAX_CHECKPOINTS} a job)."
    )
    preview_every: int | None = every_field(
        default=100,
        description=f"Save previews/step-N.png, fixed test pictures through the network, every N steps (at most "
        f"{MAX_PREVIEWS}); null for only the final preview.",
    )
    max_runtime_s: int | None = runtime_field()

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        return preset_filled(data, METHOD_DEFAULTS, info, key="method") if isinstance(data, dict) else data

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, value: list[str]) -> list[str]:
        return [image_ref(v) for v in value]

    @field_validator("content")
    @classmethod
    def _known_content(cls, value: str) -> str:
        if value == CONTENT_BUILTIN or is_upload_ref(value):
            return value
        raise ValueError(f"unknown content set {value!r}: use {CONTENT_BUILTIN!r} or the id of an image upload")

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: str) -> str:
        if value in STYLE_WEIGHT_KINDS or is_upload_ref(value):
            return value
        raise ValueError(
            f"unknown weights {value!r}: use one of {list(STYLE_WEIGHT_KINDS)} or the id of a weights upload"
        )

    @field_validator("content_layers", "style_layers")
    @classmethod
    def _known_layers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return known_layers(value, info)

    @field_validator("style_layer_weights")
    @classmethod
    def _one_weight_per_layer(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        return one_weight_per_layer(value, info)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StyleTrainParams:
        if self.method == "adain":
            refuse(self, self._adain_problems())
        if self.style_blend is not None:
            check_blend(self.style_blend, self.styles)
        if not is_stored(info):  # checked at submit: a stored job parses as it was stored
            scale_unset_every(self, self.steps, {"checkpoint_every": MAX_CHECKPOINTS})
            refuse(
                self,
                every_problems("preview_every", self.preview_every, self.steps, MAX_PREVIEWS, "previews")
                + every_problems("checkpoint_every", self.checkpoint_every, self.steps, MAX_CHECKPOINTS, "checkpoints")
                + every_problems("log_every", self.log_every, self.steps),
            )
        return self

    def _adain_problems(self) -> list[tuple[str, str]]:
        """AdaIN's decoder inverts relu4_1: the content loss is there, the style loss at or below it."""
        problems = []
        if self.content_layers != [ADAIN_LAYER]:
            problems.append(("content_layers", f"adain's content loss is at {ADAIN_LAYER} (the decoder's input)"))
        order = layer_names(self.network)
        deeper = [layer for layer in self.style_layers if order.index(layer) > order.index(ADAIN_LAYER)]
        if deeper:
            problems.append(("style_layers", f"adain's encoder stops at {ADAIN_LAYER}; {deeper} are deeper"))
        if self.style_size is not None:
            problems.append(("style_size", "adain sees style pictures at size, as style.apply does; leave it unset"))
        if self.style_blend is not None:
            problems.append(("style_blend", "adain learns from the style set as a whole; blend styles in style.apply"))
        return problems

    def references(self) -> list[Reference]:
        """Uploaded style pictures, the uploaded content set and an uploaded weights file."""
        named = [(f"params.styles.{i}", ref, "images") for i, ref in enumerate(self.styles)]
        named += [("params.content", self.content, "images"), ("params.weights", self.weights, "weights")]
        return [Reference(field=f, ref=r, upload_kind=k) for f, r, k in named if is_upload_ref(r)]

    def server_limit_problems(self, *, max_style_size: int) -> list[tuple[str, str]]:
        """The crop size and the style pictures' size against this server's ``max_style_size``."""
        sizes = [("params.size", self.size), ("params.style_size", self.style_size)]
        return [
            (field, f"{size} px is over this server's limit of {max_style_size} px")
            for field, size in sizes
            if size is not None and size > max_style_size
        ]

    def style_side(self) -> int:
        """The side the style pictures are resized to for their Gram targets."""
        return self.style_size if self.style_size is not None else self.size

    def blend(self) -> list[float]:
        """Normalised per-style weights."""
        return normalised_blend(self.style_blend, len(self.styles))

    def card(self) -> dict[str, Any]:
        """The training params a model card records."""
        return self.model_dump(mode="json", exclude={"max_runtime_s"})
