"""gan.sample: draw images from the generator of a finished gan.train job."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.jobs.params import (
    MAX_SAMPLES,
    JobParams,
    Reference,
    is_upload_ref,
)


class GanSampleParams(JobParams):
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

    def references(self) -> list[Reference]:
        """The gan.train job whose generator is sampled."""
        return [Reference(field="params.source_job", ref=self.source_job, job_type="gan.train")]
