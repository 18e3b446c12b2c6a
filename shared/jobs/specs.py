"""Job types: each is defined here, once. The API validates with these classes at submit
time and the worker parses with the same classes. Nothing here imports torch."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.jobs.vgg_layers import VggNetwork, layer_names

QUEUE_GPU = "gpu"
QUEUE_CPU = "cpu"

IMAGE_DATASETS: tuple[str, ...] = ("digits", "shapes")
# torchvision datasets, found in the worker's data cache or downloaded (training split).
TORCHVISION_DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist", "cifar10")
# 2-D Gaussian mixtures of the VEEGAN/PacGAN mode-collapse protocol: points, not images.
POINT_DATASETS: tuple[str, ...] = ("ring8", "grid25")
# Built-ins whose default is one channel.
GRAY_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion-mnist", *POINT_DATASETS)
BUILTIN_DATASETS: tuple[str, ...] = (*IMAGE_DATASETS, *TORCHVISION_DATASETS, *POINT_DATASETS)
# Pictures that ship inside scikit-image and scikit-learn: usable offline as content/style.
BUILTIN_IMAGES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "china",
    "flower",
)
# Matched with fullmatch: "$" would also match before a trailing newline, which uuid.UUID() refuses.
UPLOAD_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

MAX_STEPS = 1_000_000
MAX_BATCH = 4096
MAX_GAN_IMAGE_SIZE = 128
GAN_IMAGE_SIZES = (16, 32, 64, 128)
MIN_STYLE_SIZE = 32
MAX_STYLES = 8
MAX_SAMPLES = 4096
# What one job may write: sample grids (gan.train; style.transfer's snapshots: MAX_SNAPSHOTS) and
# checkpoints (never pruned), so every *_every field is bounded below by steps / these.
MAX_SAMPLE_GRIDS = 500
MAX_CHECKPOINTS = 1000
MAX_RUNTIME_S = 30 * 24 * 3600  # max_runtime_s: at most 30 days


def is_upload_ref(value: str) -> bool:
    """True when ``value`` names an upload (a UUID) rather than a built-in."""
    return UPLOAD_ID_RE.fullmatch(value) is not None


_STORED = "stored"  # validation context key: the data is a stored job's params, already filled in


class _Params(BaseModel):
    # strict: "10" is not an int, true is not 1 and "yes" is not a bool (an int is still a float)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Self:
        """A stored job's params. Its preset was filled in at submit, so it is not applied again: a
        field a later version added (or a preset changed since) takes its plain default, and an old
        job resumes as it started."""
        return cls.model_validate(data, context={_STORED: True})


def _refuse(model: BaseModel, problems: list[tuple[str, str]]) -> None:
    """Raise one ValidationError naming each (field, message) of ``problems``, if any."""
    if problems:
        raise ValidationError.from_exception_data(
            type(model).__name__,
            [
                InitErrorDetails(
                    type=PydanticCustomError("value_error", message), loc=(field,), input=getattr(model, field)
                )
                for field, message in problems
            ],
        )


_EVERY_MAX: dict[str, Any] = {"maximum": MAX_STEPS}  # *_every in the JSON schema (checked by _every_problems)


def _is_stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and bool(info.context.get(_STORED))


def _every_problems(
    name: str, every: int | None, steps: int, most: int | None = None, what: str = ""
) -> list[tuple[str, str]]:
    """``name`` (every N steps) is at most MAX_STEPS and writes at most ``most`` ``what`` over ``steps`` steps.

    Checked on requests only: a job stored before these bounds existed still parses as it was stored.
    """
    if every is None:
        return []
    if every > MAX_STEPS:
        return [(name, f"{name} must be at most {MAX_STEPS}, got {every}")]
    if most is None or steps // every <= most:
        return []
    return [
        (
            name,
            f"{name}={every} would save {steps // every} {what} in {steps} steps; at most {most} are allowed, "
            f"so use {name} >= {-(-steps // most)}",
        )
    ]


def _scale_unset_every(model: BaseModel, steps: int, limits: dict[str, int]) -> None:
    """A ``*_every`` the caller left at its default is raised so that a long job writes at most its limit.

    A field the caller set is kept, and refused by _every_problems if it writes too much.
    """
    for name, most in limits.items():
        every = getattr(model, name)
        if name not in model.model_fields_set and every is not None and steps // every > most:
            setattr(model, name, -(-steps // most))


def _runtime_field() -> Any:
    return Field(
        default=None,
        ge=1,
        le=MAX_RUNTIME_S,
        description="Fail the job (error code runtime_exceeded) once this many seconds have passed since it "
        "first started, hand-backs and retries included; null: no limit.",
    )


GanArch = Literal["dcgan", "mlp", "progressive", "msg"]
GanLoss = Literal["bce", "hinge", "wgan-gp"]
GanPreset = Literal["lesson", "stable"]
DiffAugmentPolicy = Literal["color", "translation", "cutout"]
MULTISCALE_GAN_ARCHS = ("progressive", "msg")
DEFAULT_GAN_IMAGE_SIZE = 32
IMAGE_EVAL_EVERY = 500  # default steps between image-quality evaluations (1,000 samples each)
MAX_N_CRITIC = 20
MAX_PACK = 8
MAX_PENALTY_WEIGHT = 1e4
MAX_LABEL_SMOOTHING = 0.5
_LESSON_GAN: dict[str, Any] = {
    # The lesson's notebook: BCE, Adam 2e-4 with beta1 0.5 for both nets, and no remedy.
    "loss": "bce",
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "r1_gamma": 0.0,
    "n_critic": 1,
    "label_smoothing": 0.0,
    "spectral_norm": False,
    "ema": None,
    "d_skip_threshold": None,
    "diffaugment": [],
    "lr_decay": "none",
    "g_batchnorm": True,
    "pack": 1,
}
GAN_PRESETS: dict[str, dict[str, Any]] = {
    "lesson": _LESSON_GAN,
    # The best default we measured (docs/benchmarks.md, "GAN quality"): on images, the lesson's
    # settings plus an EMA generator and DiffAugment (translation, cutout) on everything D sees.
    "stable": {**_LESSON_GAN, "ema": 0.999, "diffaugment": ["translation", "cutout"]},
}
# What a preset sets differently on each 2-D point dataset (docs/benchmarks.md, "GAN quality"):
# a 2-D latent and half the lesson's width (G 128-256-512, D 256-128) put more samples on the
# modes than latent 100 at full width, and both rates fall linearly to 0. DiffAugment is for images.
# No batch norm in G and Adam 5e-4: each point then comes from its latent alone and sits closer to
# a mode (grid25 at 16,000 steps: 66% HQ against 50% with BN and Adam 1e-3).
# ring8 adds PacGAN packing (D judges pairs): it catches the collapse that G without batch norm
# fell into there on one seed in five. On grid25 packing cost modes, and no seed of five collapsed.
_POINT_STABLE = {
    "lr_decay": "linear",
    "diffaugment": [],
    "nz": 2,
    "ngf": 32,
    "ndf": 32,
    "lr_g": 5e-4,
    "lr_d": 5e-4,
    "g_batchnorm": False,
}
GAN_POINT_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "ring8": {"lesson": {}, "stable": {**_POINT_STABLE, "pack": 2}},
    "grid25": {"lesson": {}, "stable": _POINT_STABLE},
}


def _preset_filled(
    data: dict[str, Any], presets: Mapping[str, Mapping[str, Any]], info: ValidationInfo
) -> dict[str, Any]:
    """A copy of the request ``data`` with its preset's values in every field the caller left out
    (none for stored params: see ``_Params.from_stored``)."""
    filled = dict(data)
    if _is_stored(info):
        return filled
    preset = filled.get("preset")
    if isinstance(preset, str) and preset in presets:
        for key, value in presets[preset].items():
            filled.setdefault(key, value)
    return filled


class GanTrainParams(_Params):
    """Train a GAN (DCGAN or the lesson's dense GAN) on a built-in dataset or an uploaded image folder."""

    preset: GanPreset | None = Field(
        default=None,
        description="Fill in the loss, learning rates and remedies; fields given explicitly win. lesson: the "
        "notebook's settings with nothing added; stable: an EMA generator (0.999) and, on images, DiffAugment "
        "translation and cutout (not with arch progressive or msg); on the point datasets latent 2, "
        "ngf = ndf = 32, no batch norm in G and Adam 5e-4 falling linearly to 0, and on ring8 pack 2.",
    )
    dataset: str = Field(
        default="digits",
        description="A built-in dataset (digits, 10 classes; shapes: circles, squares and triangles, 3 classes, "
        "RGB, drawn at any size; ring8 and grid25 are 2-D point mixtures), a torchvision dataset (mnist, "
        "fashion-mnist, cifar10: from the worker's data cache, or downloaded), or the id of an image upload "
        "(sub-folders are classes).",
    )
    conditional: bool = Field(
        default=False,
        description="Condition G and D on the class labels (one-hot into G's latent and as label maps into D); "
        "needs a dataset with classes. Sample grids then show one class per row.",
    )
    arch: GanArch = Field(
        default="dcgan",
        description="dcgan (convolutional), mlp (the lesson's dense GAN: G 256-512-1024, D 512-256 at "
        "ngf = ndf = 64), progressive (progressive growing from 4 x 4 with fade-in; the resolution and "
        "fade_alpha metrics say where it is) or msg (MSG-GAN: D sees G's image at every scale); "
        "default: mlp for point datasets, dcgan for images.",
    )
    image_size: int = Field(
        default=DEFAULT_GAN_IMAGE_SIZE,
        description="Training resolution in pixels: 16, 32, 64 or 128 (images only).",
    )
    channels: Literal[1, 3] | None = Field(
        default=None,
        description="1 (grayscale) or 3 (RGB); default: 1 for digits, mnist and fashion-mnist, 3 for shapes, "
        "cifar10 and uploads (images only).",
    )
    steps: int = Field(default=2000, ge=1, le=MAX_STEPS, description="Generator updates to run.")
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH)
    loss: GanLoss = Field(
        default="bce", description="bce (non-saturating, with logits), hinge, or wgan-gp (gradient penalty 10)."
    )
    lr_g: float = Field(default=2e-4, gt=0, le=1.0, description="Generator Adam learning rate.")
    lr_d: float = Field(default=2e-4, gt=0, le=1.0, description="Discriminator Adam learning rate.")
    lr_decay: Literal["none", "linear"] = Field(
        default="none", description="linear: both learning rates fall linearly to zero over the steps."
    )
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    n_critic: int = Field(default=1, ge=1, le=MAX_N_CRITIC, description="D steps per G step.")
    r1_gamma: float = Field(
        default=0.0, ge=0, le=MAX_PENALTY_WEIGHT, description="R1 penalty weight on D's gradient at real data; 0: off."
    )
    label_smoothing: float = Field(
        default=0.0,
        ge=0,
        lt=MAX_LABEL_SMOOTHING,
        description="One-sided label smoothing (bce only): D's target for real data is 1 - label_smoothing.",
    )
    spectral_norm: bool = Field(default=False, description="Spectral normalisation on D's layers (replaces its BN).")
    ema: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Decay of an exponential moving average of G's weights (e.g. 0.999), used for samples, "
        "evaluation and generator.pt; null: off.",
    )
    d_skip_threshold: float | None = Field(
        default=None,
        gt=0,
        description="Skip D's update while its loss is below this (bce or hinge); skips are the d_skips metric.",
    )
    diffaugment: list[DiffAugmentPolicy] = Field(
        default_factory=list,
        description="DiffAugment policies applied to every D input, real and fake (images only): "
        "color, translation, cutout.",
    )
    g_batchnorm: bool = Field(
        default=True,
        description="Batch norm in the dense generator's hidden layers, as in the lesson (arch 'mlp' only; "
        "false: none, so each sample depends on its latent alone).",
    )
    pack: int = Field(
        default=1,
        ge=1,
        le=MAX_PACK,
        description="PacGAN packing: D judges this many samples at once (one logit per pack), which makes "
        "a generator that repeats itself easy to spot; must divide batch_size (arch mlp or dcgan, "
        "unconditional). 1: off.",
    )
    nz: int = Field(default=100, ge=1, le=1024, description="Latent size.")
    ngf: int = Field(default=64, ge=4, le=1024, description="Generator width.")
    ndf: int = Field(default=64, ge=4, le=1024, description="Discriminator width.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    log_every: int = Field(default=1, ge=1, json_schema_extra=_EVERY_MAX, description="Record metrics every N steps.")
    checkpoint_every: int = Field(
        default=100,
        ge=1,
        json_schema_extra=_EVERY_MAX,
        description=f"Checkpoint every N steps (at most {MAX_CHECKPOINTS} a job).",
    )
    sample_every: int = Field(
        default=100,
        ge=1,
        json_schema_extra=_EVERY_MAX,
        description=f"Sample grid from fixed noise every N steps (at most {MAX_SAMPLE_GRIDS} grids a job).",
    )
    eval_every: int | None = Field(
        default=None,
        ge=1,
        json_schema_extra=_EVERY_MAX,
        description="Quality metrics every N steps and at the end: modes and hq_share on point datasets, "
        "fd, kid, precision and recall on images (in a digits classifier's feature space). Default: "
        f"sample_every on points, max(sample_every, {IMAGE_EVAL_EVERY}) on images.",
    )
    image_metrics: bool = Field(
        default=True, description="Compute fd, kid, precision and recall at evaluation ticks (images only)."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 autocast and channels_last on a CUDA GPU with bf16, fp32 elsewhere; "
        "fp32 or bf16 force it (losses stay fp32).",
    )
    max_runtime_s: int | None = _runtime_field()

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        dataset = data.get("dataset")
        point_presets = GAN_POINT_PRESETS.get(dataset) if isinstance(dataset, str) else None
        presets = (
            {name: values | point_presets[name] for name, values in GAN_PRESETS.items()}
            if point_presets is not None
            else GAN_PRESETS
        )
        if data.get("arch") in MULTISCALE_GAN_ARCHS:  # they take no DiffAugment: the preset leaves it off
            presets = {
                name: {k: v for k, v in values.items() if k != "diffaugment"} for name, values in presets.items()
            }
        filled = _preset_filled(data, presets, info)
        if "arch" not in filled:
            filled["arch"] = "mlp" if filled.get("dataset") in POINT_DATASETS else "dcgan"
        return filled

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value in BUILTIN_DATASETS or is_upload_ref(value):
            return value
        raise ValueError(f"unknown dataset {value!r}: use one of {list(BUILTIN_DATASETS)} or an upload id")

    @field_validator("channels", mode="before")
    @classmethod
    def _integer_channels(cls, value: Any) -> Any:
        # A Literal compares by equality, so true and 3.0 would pass as 1 and 3
        if value is not None and type(value) is not int:
            raise ValueError(f"channels must be the integer 1 or 3, got {value!r}")
        return value

    @field_validator("image_size")
    @classmethod
    def _known_size(cls, value: int) -> int:
        if value not in GAN_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {list(GAN_IMAGE_SIZES)}, got {value}")
        return value

    @field_validator("diffaugment")
    @classmethod
    def _unique_policies(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"diffaugment lists a policy twice: {value}")
        return value

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> GanTrainParams:
        problems: list[tuple[str, str]] = []
        if self.points:
            what = f"dataset {self.dataset!r} is 2-D points, not images"
            if self.arch != "mlp":
                problems.append(("arch", f"{what}: use arch 'mlp'"))
            if self.image_size != DEFAULT_GAN_IMAGE_SIZE:
                problems.append(("image_size", f"{what}: leave image_size unset"))
            if self.channels is not None:
                problems.append(("channels", f"{what}: leave channels unset"))
            if self.diffaugment:
                problems.append(("diffaugment", f"{what}: DiffAugment applies to images only"))
            if self.conditional:
                problems.append(("conditional", f"{what}: class conditioning applies to labelled images"))
        elif self.conditional and self.arch != "dcgan":
            problems.append(("conditional", "class conditioning needs arch 'dcgan'"))
        if self.arch in MULTISCALE_GAN_ARCHS:
            why = f"arch {self.arch!r}"
            if self.points:
                problems.append(("arch", f"{why} trains images, not 2-D points"))
            if self.diffaugment:
                problems.append(("diffaugment", f"{why} does not support DiffAugment"))
            if self.r1_gamma or self.loss == "wgan-gp":
                field = "r1_gamma" if self.r1_gamma else "loss"
                problems.append((field, f"{why} supports the bce and hinge losses without gradient penalties"))
            resolutions = self.image_size.bit_length() - 2  # 4 x 4 ... image_size
            if self.arch == "progressive" and self.steps < resolutions:
                problems.append(
                    (
                        "steps",
                        f"{why} at {self.image_size} px grows through {resolutions} resolutions: "
                        f"give it at least {resolutions} steps",
                    )
                )
        if not self.g_batchnorm and self.arch != "mlp":
            problems.append(
                ("g_batchnorm", f"g_batchnorm false applies to the dense GAN (arch 'mlp'), not {self.arch!r}")
            )
        if self.pack > 1:
            if self.arch in MULTISCALE_GAN_ARCHS or self.conditional:
                why = f"arch {self.arch!r}" if self.arch in MULTISCALE_GAN_ARCHS else "conditional training"
                problems.append(("pack", f"pack applies to unconditional mlp and dcgan training, not {why}"))
            if self.batch_size % self.pack:
                problems.append(("pack", f"pack {self.pack} must divide batch_size {self.batch_size}"))
        if self.label_smoothing and self.loss != "bce":
            problems.append(("label_smoothing", f"label_smoothing applies to the bce loss, not {self.loss!r}"))
        if self.d_skip_threshold is not None and self.loss == "wgan-gp":
            problems.append(("d_skip_threshold", "d_skip_threshold needs a loss bounded below (bce or hinge)"))
        if not _is_stored(info):
            _scale_unset_every(
                self, self.steps, {"sample_every": MAX_SAMPLE_GRIDS, "checkpoint_every": MAX_CHECKPOINTS}
            )
            problems += _every_problems("sample_every", self.sample_every, self.steps, MAX_SAMPLE_GRIDS, "sample grids")
            problems += _every_problems(
                "checkpoint_every", self.checkpoint_every, self.steps, MAX_CHECKPOINTS, "checkpoints"
            )
            problems += _every_problems("log_every", self.log_every, self.steps)
            problems += _every_problems("eval_every", self.eval_every, self.steps)
        _refuse(self, problems)
        return self

    @property
    def points(self) -> bool:
        """True for the 2-D point datasets (ring8, grid25)."""
        return self.dataset in POINT_DATASETS

    def resolved_channels(self) -> int:
        """Channel count after applying the dataset default."""
        if self.channels is not None:
            return self.channels
        return 1 if self.dataset in GRAY_DATASETS else 3

    def resolved_eval_every(self) -> int:
        """Steps between quality evaluations."""
        if self.eval_every is not None:
            return self.eval_every
        return self.sample_every if self.points else max(self.sample_every, IMAGE_EVAL_EVERY)


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


class StyleTransferParams(_Params):
    """Gatys neural style transfer: optimise an image against content and Gram-style losses."""

    preset: Literal["lesson", "gatys"] | None = Field(
        default=None,
        description="Fill in network, layers, layer weights, pooling, optimiser, lr and init; "
        "fields given explicitly win. lesson: the lesson notebook's VGG16 + Adam; gatys: the paper's "
        "VGG19 (avg pooling) + L-BFGS from noise.",
    )
    content: str = Field(description="A built-in image name or the id of an image upload.")
    styles: list[str] = Field(min_length=1, max_length=MAX_STYLES, description="Style images (names or upload ids).")
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
    log_every: int = Field(default=1, ge=1, json_schema_extra=_EVERY_MAX)
    checkpoint_every: int = Field(
        default=50,
        ge=1,
        json_schema_extra=_EVERY_MAX,
        description=f"Checkpoint every N steps (at most {MAX_CHECKPOINTS} a job).",
    )
    snapshot_every: int | None = Field(
        default=None,
        ge=1,
        json_schema_extra=_EVERY_MAX,
        description=f"Save the image as a snapshots/step-N.png artifact every N steps (at most {MAX_SNAPSHOTS}).",
    )
    max_runtime_s: int | None = _runtime_field()

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        filled = _preset_filled(data, STYLE_PRESETS, info)
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

    @field_validator("style_layer_weights")
    @classmethod
    def _one_weight_per_layer(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if value is None:
            return value
        layers = info.data.get("style_layers")
        if layers is not None and len(value) != len(layers):
            raise ValueError(f"{len(value)} weights for {len(layers)} style_layers; give one per layer")
        if any(w < 0 for w in value) or sum(value) <= 0:
            raise ValueError("style_layer_weights must be non-negative and not all zero")
        return value

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
            if len(self.style_blend) != len(self.styles):
                raise ValueError(
                    f"style_blend has {len(self.style_blend)} weights but styles has {len(self.styles)} images"
                )
            if any(w < 0 for w in self.style_blend) or sum(self.style_blend) <= 0:
                raise ValueError("style_blend weights must be non-negative and not all zero")
        if self.scales is not None and self.scales[-1] != self.size:
            raise ValueError(f"scales must end at size ({self.size} px), got {self.scales}")
        if not _is_stored(info):  # checked at submit: a stored job parses as it was stored
            total = self.total_steps()
            _scale_unset_every(self, total, {"checkpoint_every": MAX_CHECKPOINTS})
            _refuse(
                self,
                _every_problems("snapshot_every", self.snapshot_every, total, MAX_SNAPSHOTS, "snapshots")
                + _every_problems("checkpoint_every", self.checkpoint_every, total, MAX_CHECKPOINTS, "checkpoints")
                + _every_problems("log_every", self.log_every, total),
            )
        return self

    def blend(self) -> list[float]:
        """Normalised per-style weights."""
        raw = self.style_blend or [1.0] * len(self.styles)
        total = sum(raw)
        return [w / total for w in raw]

    def scale_sizes(self) -> list[int]:
        """The sizes to optimise at, coarse to fine; the last is ``size``."""
        return list(self.scales) if self.scales is not None else [self.size]

    def total_steps(self) -> int:
        """Optimiser steps over every scale."""
        return self.steps * len(self.scale_sizes())

    def largest_style_size(self) -> int:
        """The longer side, in pixels, of the largest resized style image."""
        return max(1, round(self.size * self.style_scale))


def _image_ref(value: str) -> str:
    if value in BUILTIN_IMAGES or is_upload_ref(value):
        return value
    raise ValueError(f"unknown image {value!r}: use one of {list(BUILTIN_IMAGES)} or an upload id")


class GanSampleParams(_Params):
    """Draw images from the generator of a finished gan.train job."""

    source_job: str = Field(description="Id of a succeeded gan.train job of yours.")
    n: int = Field(default=64, ge=1, le=MAX_SAMPLES, description="How many images to draw.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("source_job")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if not is_upload_ref(value):
            raise ValueError(f"source_job must be a job id (UUID), got {value!r}")
        return value


@dataclass(frozen=True)
class JobSpec:
    """What the system needs to know about a job type."""

    name: str
    params: type[_Params]
    queue: str
    summary: str
    example: dict[str, Any]

    def total_units(self, params: _Params) -> int:
        """Units of progress the job reports (steps or images)."""
        total_steps = getattr(params, "total_steps", None)
        if callable(total_steps):
            return int(total_steps())
        for attr in ("steps", "n"):
            value = getattr(params, attr, None)
            if isinstance(value, int):
                return value
        return 1


JOB_TYPES: dict[str, JobSpec] = {
    spec.name: spec
    for spec in (
        JobSpec(
            name="gan.train",
            params=GanTrainParams,
            queue=QUEUE_GPU,
            summary="Train a DCGAN; checkpoints, loss history, sample grids, final generator weights.",
            example={"dataset": "digits", "steps": 200, "batch_size": 64, "sample_every": 50, "seed": 1},
        ),
        JobSpec(
            name="style.transfer",
            params=StyleTransferParams,
            queue=QUEUE_GPU,
            summary="Gatys style transfer with content, Gram-matrix style and total-variation losses.",
            example={"content": "astronaut", "styles": ["coffee"], "size": 128, "steps": 100, "weights": "random"},
        ),
        JobSpec(
            name="gan.sample",
            params=GanSampleParams,
            queue=QUEUE_GPU,
            summary="Sample N images from a finished gan.train job: a PNG grid and raw .npy outputs.",
            example={"source_job": "00000000-0000-0000-0000-000000000000", "n": 64, "seed": 0},
        ),
    )
}
