"""Job types: each is defined here, once. The API validates with these classes at submit
time and the worker parses with the same classes. Nothing here imports torch."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

QUEUE_GPU = "gpu"
QUEUE_CPU = "cpu"

BUILTIN_DATASETS: tuple[str, ...] = ("digits",)
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
UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

MAX_STEPS = 1_000_000
MAX_BATCH = 4096
MAX_GAN_IMAGE_SIZE = 128
GAN_IMAGE_SIZES = (16, 32, 64, 128)
MIN_STYLE_SIZE = 32
MAX_STYLES = 8
MAX_SAMPLES = 4096


def is_upload_ref(value: str) -> bool:
    """True when ``value`` names an upload (a UUID) rather than a built-in."""
    return bool(UPLOAD_ID_RE.match(value))


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GanTrainParams(_Params):
    """Train a DCGAN on a built-in dataset or an uploaded image folder."""

    dataset: str = Field(
        default="digits",
        description="A built-in dataset name (digits) or the id of an image upload.",
    )
    image_size: int = Field(default=32, description="Training resolution in pixels: 16, 32, 64 or 128.")
    channels: Literal[1, 3] | None = Field(
        default=None, description="1 (grayscale) or 3 (RGB); default: 1 for digits, 3 for uploads."
    )
    steps: int = Field(default=2000, ge=1, le=MAX_STEPS, description="Generator updates to run.")
    batch_size: int = Field(default=64, ge=1, le=MAX_BATCH)
    lr_g: float = Field(default=2e-4, gt=0, le=1.0, description="Generator Adam learning rate.")
    lr_d: float = Field(default=2e-4, gt=0, le=1.0, description="Discriminator Adam learning rate.")
    beta1: float = Field(default=0.5, ge=0, lt=1)
    beta2: float = Field(default=0.999, ge=0, lt=1)
    nz: int = Field(default=100, ge=1, le=1024, description="Latent size.")
    ngf: int = Field(default=64, ge=4, le=1024, description="Generator width.")
    ndf: int = Field(default=64, ge=4, le=1024, description="Discriminator width.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    log_every: int = Field(default=1, ge=1, description="Record metrics every N steps.")
    checkpoint_every: int = Field(default=100, ge=1, description="Checkpoint every N steps.")
    sample_every: int = Field(default=100, ge=1, description="Sample grid from fixed noise every N steps.")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value in BUILTIN_DATASETS or is_upload_ref(value):
            return value
        raise ValueError(f"unknown dataset {value!r}: use one of {list(BUILTIN_DATASETS)} or an upload id")

    @field_validator("image_size")
    @classmethod
    def _known_size(cls, value: int) -> int:
        if value not in GAN_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {list(GAN_IMAGE_SIZES)}, got {value}")
        return value

    def resolved_channels(self) -> int:
        """Channel count after applying the dataset default."""
        if self.channels is not None:
            return self.channels
        return 1 if self.dataset in BUILTIN_DATASETS else 3


class StyleTransferParams(_Params):
    """Gatys neural style transfer: optimise an image against content and Gram-style losses."""

    content: str = Field(description="A built-in image name or the id of an image upload.")
    styles: list[str] = Field(min_length=1, max_length=MAX_STYLES, description="Style images (names or upload ids).")
    style_blend: list[float] | None = Field(
        default=None, description="One non-negative weight per style image; default: equal weights."
    )
    size: int = Field(default=256, ge=MIN_STYLE_SIZE, description="Output size of the longer side in pixels.")
    steps: int = Field(default=300, ge=1, le=100_000, description="Optimiser steps.")
    weights: Literal["imagenet", "random"] = Field(
        default="imagenet", description="VGG19 weights: torchvision ImageNet weights, or seeded random ones."
    )
    content_weight: float = Field(default=1.0, ge=0)
    style_weight: float = Field(default=1e4, ge=0)
    tv_weight: float = Field(default=1e-3, ge=0)
    lr: float = Field(default=0.05, gt=0, le=10.0)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    log_every: int = Field(default=1, ge=1)
    checkpoint_every: int = Field(default=50, ge=1)

    @field_validator("content")
    @classmethod
    def _known_content(cls, value: str) -> str:
        return _image_ref(value)

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, value: list[str]) -> list[str]:
        return [_image_ref(v) for v in value]

    @model_validator(mode="after")
    def _blend_matches(self) -> StyleTransferParams:
        if self.style_blend is not None:
            if len(self.style_blend) != len(self.styles):
                raise ValueError(
                    f"style_blend has {len(self.style_blend)} weights but styles has {len(self.styles)} images"
                )
            if any(w < 0 for w in self.style_blend) or sum(self.style_blend) <= 0:
                raise ValueError("style_blend weights must be non-negative and not all zero")
        return self

    def blend(self) -> list[float]:
        """Normalised per-style weights."""
        raw = self.style_blend or [1.0] * len(self.styles)
        total = sum(raw)
        return [w / total for w in raw]


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
