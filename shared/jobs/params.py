"""What every job type's params share: the base model (strict, no extra fields), the vocabulary
of queues, datasets and images, and the checks on ``*_every`` fields. Nothing here imports torch."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic_core import InitErrorDetails, PydanticCustomError

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
# The built-in names a form may offer, as JSON schema extensions (the dashboard reads them from /openapi.json).
DATASET_CHOICES: dict[str, Any] = {"x-builtins": list(BUILTIN_DATASETS), "x-torchvision": list(TORCHVISION_DATASETS)}
IMAGE_CHOICES: dict[str, Any] = {"x-builtins": list(BUILTIN_IMAGES)}
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
MIN_CLASSES = 2  # conditional training needs at least this many classes
MAX_RUNTIME_S = 30 * 24 * 3600  # max_runtime_s: at most 30 days


def is_upload_ref(value: str) -> bool:
    """True when ``value`` names an upload (a UUID) rather than a built-in."""
    return UPLOAD_ID_RE.fullmatch(value) is not None


_STORED = "stored"  # validation context key: the data is a stored job's params, already filled in


class JobParams(BaseModel):
    # strict: "10" is not an int, true is not 1 and "yes" is not a bool (an int is still a float)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Self:
        """A stored job's params. Its preset was filled in at submit, so it is not applied again: a
        field a later version added (or a preset changed since) takes its plain default, and an old
        job resumes as it started."""
        return cls.model_validate(data, context={_STORED: True})

    def references(self) -> list[Reference]:
        """The uploads and jobs these params name (none by default)."""
        return []

    def server_limit_problems(self, *, max_style_size: int) -> list[tuple[str, str]]:
        """(field, message) for each of this server's limits that the params pass (none by default)."""
        return []


def refuse(model: BaseModel, problems: list[tuple[str, str]]) -> None:
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


EVERY_MAX: dict[str, Any] = {"maximum": MAX_STEPS}  # *_every in the JSON schema (checked by every_problems)


def every_field(*, default: int | None, description: str) -> Any:
    """A ``*_every`` field: N >= 1 steps, at most MAX_STEPS in the schema (checked by every_problems)."""
    return Field(default=default, ge=1, json_schema_extra=EVERY_MAX, description=description)


def is_stored(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and bool(info.context.get(_STORED))


def every_problems(
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


def scale_unset_every(model: BaseModel, steps: int, limits: dict[str, int]) -> None:
    """A ``*_every`` the caller left at its default is raised so that a long job writes at most its limit.

    A field the caller set is kept, and refused by every_problems if it writes too much.
    """
    for name, most in limits.items():
        every = getattr(model, name)
        if name not in model.model_fields_set and every is not None and steps // every > most:
            setattr(model, name, -(-steps // most))


def runtime_field() -> Any:
    return Field(
        default=None,
        ge=1,
        le=MAX_RUNTIME_S,
        description="Fail the job (error code runtime_exceeded) once this many seconds have passed since it "
        "first started, hand-backs and retries included; null: no limit.",
    )


def preset_filled(
    data: dict[str, Any], presets: Mapping[str, Mapping[str, Any]], info: ValidationInfo, *, key: str = "preset"
) -> dict[str, Any]:
    """A copy of the request ``data`` with its preset's values (the preset named by field ``key``) in every
    field the caller left out (none for stored params: see ``JobParams.from_stored``)."""
    filled = dict(data)
    if is_stored(info):
        return filled
    preset = filled.get(key)
    if isinstance(preset, str) and preset in presets:
        for key, value in presets[preset].items():
            filled.setdefault(key, value)
    return filled


@dataclass(frozen=True)
class Reference:
    """An upload or an earlier job that a job's params name; submit checks each is the caller's and fits."""

    field: str  # where it was named, e.g. "params.styles.1"
    ref: str  # the upload or job id
    upload_kind: str | None = None  # an upload of this kind ("images" or "weights")
    min_classes: int = 0  # ... holding at least this many classes (sub-folders)
    classes_field: str | None = None  # the field that asks for the classes (named when there are too few)
    job_type: str | None = None  # or a succeeded job of this type
    artifact: str | None = None  # ... that still has this artifact (a model that was not deleted)
