"""style.apply: run a trained style model (a succeeded style.train job's model.safetensors) over pictures.

One forward pass a picture: the short, interactive job ``Prefer: wait`` is made for. A model is named by
the id of the style.train job that trained it (``GET /v1/models`` lists them).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from shared.jobs.params import IMAGE_CHOICES, MAX_STYLES, MIN_STYLE_SIZE, JobParams, Reference, is_upload_ref
from shared.jobs.style_train import MODEL_ARTIFACT
from shared.jobs.style_transfer import check_blend, image_ref, normalised_blend

MODEL_JOB_TYPE = "style.train"
MAX_APPLY_INPUTS = 64  # names in params.images (an upload among them may hold many pictures)
DEFAULT_APPLY_SIZE = 512
SINGLE_OUTPUT = "output.png"  # one picture in, one PNG out
BATCH_OUTPUT = "outputs.zip"  # several pictures in: one zip of PNGs, named after their inputs


class StyleApplyParams(JobParams):
    """Apply a trained style model to one picture or a batch."""

    model: str = Field(description="Id of a trained style model: the id of a succeeded style.train job of yours.")
    images: list[Annotated[str, Field(json_schema_extra=IMAGE_CHOICES)]] = Field(
        min_length=1,
        max_length=MAX_APPLY_INPUTS,
        description="Pictures to style: built-in names or ids of image uploads (every picture of an upload, so a "
        "zip or folder is a batch). One picture gives output.png; several give outputs.zip.",
    )
    size: int = Field(
        default=DEFAULT_APPLY_SIZE,
        ge=MIN_STYLE_SIZE,
        description="Longer side of each output in pixels (each picture is resized to it, keeping its aspect).",
    )
    strength: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="johnson: blend the output with the picture in pixels: 1 is the network's output, 0 the picture.",
    )
    styles: list[Annotated[str, Field(json_schema_extra=IMAGE_CHOICES)]] | None = Field(
        default=None,
        max_length=MAX_STYLES,
        description="adain: the style pictures (built-in names or image upload ids; the first picture of an upload). "
        "Required for an adain model, refused for a johnson one (its styles are trained in).",
    )
    style_blend: list[float] | None = Field(
        default=None, description="adain: one non-negative weight per style picture, to interpolate between them."
    )
    alpha: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="adain: the content/style trade-off in feature space: 0 is the picture, 1 (the default) full style.",
    )
    preserve_colors: bool = Field(default=False, description="Keep each picture's colours (luminance-only style).")

    @field_validator("model")
    @classmethod
    def _model_id(cls, value: str) -> str:
        if not is_upload_ref(value):
            raise ValueError(f"model must be a model id (the UUID of a style.train job), got {value!r}")
        return value

    @field_validator("images")
    @classmethod
    def _known_images(cls, value: list[str]) -> list[str]:
        return [image_ref(v) for v in value]

    @field_validator("styles")
    @classmethod
    def _known_styles(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [image_ref(v) for v in value]

    @model_validator(mode="after")
    def _blend_matches(self) -> StyleApplyParams:
        if self.style_blend is not None:
            if self.styles is None:
                raise ValueError("style_blend weighs styles; give styles too")
            check_blend(self.style_blend, self.styles)
        return self

    def method_problems(self, method: str, *, model: str) -> list[tuple[str, str]]:
        """(field, message) for each option that does not fit a model of ``method``."""
        if method == "adain":
            if not self.styles:
                return [("params.styles", f"model {model} is an adain model: give the style pictures to apply")]
            return []
        given = [name for name in ("styles", "style_blend", "alpha") if getattr(self, name) is not None]
        return [
            (
                f"params.{name}",
                f"{name} applies to adain models; model {model} is a {method} model (its style is trained in)",
            )
            for name in given
        ]

    def alpha_or_default(self) -> float:
        """AdaIN's trade-off: alpha, or full style."""
        return 1.0 if self.alpha is None else self.alpha

    def blend(self) -> list[float]:
        """Normalised per-style weights (equal when style_blend is not given)."""
        return normalised_blend(self.style_blend, len(self.styles or []))

    def references(self) -> list[Reference]:
        """The style.train job whose model is applied, and the uploaded pictures."""
        refs = [Reference(field="params.model", ref=self.model, job_type=MODEL_JOB_TYPE, artifact=MODEL_ARTIFACT)]
        named = [(f"params.images.{i}", ref) for i, ref in enumerate(self.images)]
        named += [(f"params.styles.{i}", ref) for i, ref in enumerate(self.styles or [])]
        return refs + [Reference(field=f, ref=r, upload_kind="images") for f, r in named if is_upload_ref(r)]

    def server_limit_problems(self, *, max_style_size: int) -> list[tuple[str, str]]:
        """The output size against this server's ``max_style_size``."""
        if self.size > max_style_size:
            return [("params.size", f"{self.size} px is over this server's limit of {max_style_size} px")]
        return []

    def total_steps(self) -> int:
        """Progress units at submit: one per named picture (the worker counts an upload's pictures when it runs)."""
        return len(self.images)
