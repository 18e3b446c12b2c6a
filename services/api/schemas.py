"""HTTP request and response bodies of API v1."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.db.models import Artifact, Job, Upload
from shared.jobs.states import JobState


class JobCreate(BaseModel):
    """A job submission: its type and that type's params."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="gan.train, style.transfer or gan.sample")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of that job type")


class Progress(BaseModel):
    """How far a job got."""

    step: int
    total: int
    fraction: float
    steps_per_second: float | None
    eta_seconds: float | None


class ErrorInfo(BaseModel):
    """Why a job failed."""

    code: str
    message: str


class CheckpointInfo(BaseModel):
    """The checkpoint a retried attempt resumes from."""

    step: int


class JobLinks(BaseModel):
    """Where to look next."""

    self: str
    metrics: str
    artifacts: str
    cancel: str


class JobOut(BaseModel):
    """A job's status."""

    id: uuid.UUID
    type: str
    state: JobState
    params: dict[str, Any]
    attempt: int
    max_attempts: int
    handbacks: int = Field(
        description="Attempts a worker handed back on shutdown (deploys, scale-down); they don't count "
        "against max_attempts"
    )
    cancel_requested: bool
    progress: Progress
    metrics: dict[str, float] = Field(description="The latest value of each metric")
    warnings: list[str]
    error: ErrorInfo | None
    checkpoint: CheckpointInfo | None
    resumed_from_step: int | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: JobLinks

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """Render a job row."""
        rate = job.steps_per_s if job.state == JobState.RUNNING else None
        remaining = max(job.progress_total - job.progress_step, 0)
        eta = remaining / rate if rate else (0.0 if job.state == JobState.SUCCEEDED else None)
        base = f"/v1/jobs/{job.id}"
        return cls(
            id=job.id,
            type=job.type,
            state=JobState(job.state),
            params=job.params,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            handbacks=job.handbacks,
            cancel_requested=job.cancel_requested,
            progress=Progress(
                step=job.progress_step,
                total=job.progress_total,
                fraction=job.progress_step / job.progress_total if job.progress_total else 0.0,
                steps_per_second=rate,
                eta_seconds=eta,
            ),
            metrics=job.latest_metrics,
            warnings=job.warnings,
            error=ErrorInfo(code=job.error_code, message=job.error_message or "") if job.error_code else None,
            checkpoint=CheckpointInfo(step=job.checkpoint_step) if job.checkpoint_step is not None else None,
            resumed_from_step=job.resumed_from_step,
            worker=job.lease_owner,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            links=JobLinks(
                self=base, metrics=f"{base}/metrics", artifacts=f"{base}/artifacts", cancel=f"{base}/cancel"
            ),
        )


class JobPage(BaseModel):
    """A page of jobs, newest first."""

    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class MetricPointOut(BaseModel):
    """One point; when downsampled, the mean of a bucket ending at ``step``."""

    step: int
    value: float
    min: float
    max: float
    count: int


class MetricsOut(BaseModel):
    """Loss history of a job."""

    job_id: uuid.UUID
    names: list[str]
    since_step: int
    max_points: int
    series: dict[str, list[MetricPointOut]]


class ArtifactOut(BaseModel):
    """A stored output of a job."""

    name: str
    kind: str
    size: int
    sha256: str
    content_type: str
    created_at: datetime
    url: str

    @classmethod
    def of(cls, artifact: Artifact) -> ArtifactOut:
        """Render an artifact row."""
        return cls(
            name=artifact.name,
            kind=artifact.kind,
            size=artifact.size,
            sha256=artifact.sha256,
            content_type=artifact.content_type,
            created_at=artifact.created_at,
            url=f"/v1/jobs/{artifact.job_id}/artifacts/{artifact.name}",
        )


class ArtifactList(BaseModel):
    """A page of a job's artifacts, by name."""

    items: list[ArtifactOut]
    next_cursor: str | None = Field(
        default=None, description="Pass as ?cursor= for the next page; null on the last page"
    )


class UploadFileOut(BaseModel):
    """One file of an upload (width and height are 0 for a weights file)."""

    path: str
    width: int
    height: int
    bytes: int


class UploadOut(BaseModel):
    """An image set (or single image) usable as a dataset or a content/style image, or a weights
    file (kind "weights") usable as a style.transfer job's ``weights``."""

    id: uuid.UUID
    kind: Literal["images", "weights"] = Field(description="images, or one torch.save weights file")
    filename: str
    file_count: int
    total_bytes: int
    classes: list[str]
    files: list[UploadFileOut] = Field(description="The first files of the upload (up to 100)")
    created_at: datetime

    @classmethod
    def of(cls, upload: Upload, *, max_files: int = 100) -> UploadOut:
        """Render an upload row."""
        return cls(
            id=upload.id,
            kind="weights" if upload.kind == "weights" else "images",
            filename=upload.filename,
            file_count=upload.file_count,
            total_bytes=upload.total_bytes,
            classes=upload.classes,
            files=[
                UploadFileOut(path=f["path"], width=f["width"], height=f["height"], bytes=f["bytes"])
                for f in upload.manifest[:max_files]
            ],
            created_at=upload.created_at,
        )


class UploadPage(BaseModel):
    """A page of uploads, newest first."""

    items: list[UploadOut]
    next_cursor: str | None


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    code: str
    message: str
    field: str | None = None
    request_id: str | None = Field(default=None, description="On a 500: quote it when reporting the error")


class ErrorOut(BaseModel):
    """Error envelope."""

    error: ErrorBody
