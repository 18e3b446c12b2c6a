"""HTTP request and response bodies of API v1."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from shared.db.models import Artifact, Job, Sweep, Upload, WebhookAttempt, WebhookDelivery
from shared.db.queries.api import StyleModel
from shared.db.queries.events import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_PROGRESS_EVERY_S
from shared.jobs.states import DEFAULT_PRIORITY, PRIORITY_NAMES, JobState
from shared.jobs.style_train import CARD_ARTIFACT

WEBHOOK_URL_MAX = 2000
WebhookEvent = Literal["start", "progress", "artifact", "completed"]
Priority = Literal["low", "normal", "high"]


class JobCreate(BaseModel):
    """A job submission: its type and that type's params."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="gan.train, style.transfer, style.train, style.apply or gan.sample")
    params: dict[str, Any] = Field(default_factory=dict, description="Parameters of that job type")
    webhook: str | None = Field(
        default=None,
        max_length=WEBHOOK_URL_MAX,
        description="An http(s) URL that receives signed POSTs (Standard Webhooks) for the events in "
        "webhook_events_filter",
    )
    webhook_events_filter: list[WebhookEvent] | None = Field(
        default=None,
        description=f"Which events to deliver; default {list(DEFAULT_WEBHOOK_EVENTS)}. progress is sent "
        f"at most once every {WEBHOOK_PROGRESS_EVERY_S:g} s",
    )
    priority: Priority = Field(
        default="normal",
        description="Orders your own queued jobs: a high job starts before your queued normal and low ones. "
        "Between tenants, fair share decides (each tenant's share of the workers follows its weight)",
    )


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


class Queueing(BaseModel):
    """Where a queued job stands, and why it has not started (approximate: fair share reorders as work ends)."""

    position: int = Field(description="1: the next job its queue's next free worker takes")
    reason: str = Field(description='e.g. "behind 3 of your jobs", or your tenant\'s running limit')


class JobLinks(BaseModel):
    """Where to look next."""

    self: str
    events: str
    metrics: str
    artifacts: str
    webhooks: str
    cancel: str


class EarlyStopOut(BaseModel):
    """Why a sweep's early-stopping rule stopped this trial (state stopped_early)."""

    rule: Literal["median", "asha"]
    step: int = Field(description="The tick (median) or rung (asha) at which it was judged")
    metric: str
    value: float = Field(description="The trial's objective as the rule read it: its best (median) or last (asha)")
    threshold: float = Field(description="What it had to match: the others' median, or the rung's cutoff")
    compared: int = Field(description="How many other trials had reached that step")
    message: str

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> EarlyStopOut | None:
        """Render jobs.early_stop."""
        return cls.model_validate(stored) if stored else None


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
    priority: Priority
    queueing: Queueing | None = Field(
        default=None,
        description="For a queued job on GET /v1/jobs/{id}: its approximate queue position and pending reason",
    )
    progress: Progress
    metrics: dict[str, float] = Field(description="The latest value of each metric")
    warnings: list[str]
    error: ErrorInfo | None
    early_stop: EarlyStopOut | None = Field(
        default=None, description="For a stopped_early sweep trial: which rule stopped it, where, and why"
    )
    sweep_id: uuid.UUID | None = Field(default=None, description="The sweep this job is a trial of, if any")
    checkpoint: CheckpointInfo | None
    resumed_from_step: int | None
    worker: str | None
    webhook: str | None = Field(description="Where this job's events are delivered, if anywhere")
    webhook_events_filter: list[str] = Field(description="Which events are delivered to the webhook")
    last_event_id: int = Field(description="The id of the job's latest event (GET .../events to follow them)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: JobLinks

    @classmethod
    def of(cls, job: Job, *, queueing: Queueing | None = None) -> JobOut:
        """Render a job row (``queueing``: a queued job's place, which only the single-job read computes)."""
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
            priority=cast(Priority, PRIORITY_NAMES.get(job.priority, DEFAULT_PRIORITY)),
            queueing=queueing,
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
            early_stop=EarlyStopOut.of(job.early_stop),
            sweep_id=job.sweep_id,
            checkpoint=CheckpointInfo(step=job.checkpoint_step) if job.checkpoint_step is not None else None,
            resumed_from_step=job.resumed_from_step,
            worker=job.lease_owner,
            webhook=job.webhook_url,
            webhook_events_filter=job.webhook_events if job.webhook_url else [],
            last_event_id=job.event_seq,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
            links=JobLinks(
                self=base,
                events=f"{base}/events",
                metrics=f"{base}/metrics",
                artifacts=f"{base}/artifacts",
                webhooks=f"{base}/webhooks",
                cancel=f"{base}/cancel",
            ),
        )


class JobDeletion(BaseModel):
    """DELETE /v1/jobs/{id}: accepted; the job is gone for every read now, its data goes in the background."""

    id: uuid.UUID
    state: Literal["deleting"] = "deleting"
    stopping: bool = Field(description="It was running: it stops within a step, then its data goes")
    detail: str


class UploadDeletion(BaseModel):
    """DELETE /v1/uploads/{id}: accepted; the upload is gone for every read now, its files go in the background."""

    id: uuid.UUID
    state: Literal["deleting"] = "deleting"
    detail: str


class StoredBytes(BaseModel):
    """Bytes the tenant stores, by kind."""

    artifacts: int = Field(description="Sample grids, weights, outputs and plots of its jobs")
    checkpoints: int = Field(description="The one checkpoint each job keeps")
    uploads: int = Field(description="Its uploaded image sets, pictures and weights files")
    total: int


class UsageOut(BaseModel):
    """GET /v1/usage: what the tenant stores and uses."""

    stored: StoredBytes
    storage_quota_bytes: int | None = Field(description="The most it may store (null: no quota)")
    storage_left_bytes: int | None = Field(description="What it may still store (null: no quota)")
    metric_rows: int = Field(description="Rows of loss history its jobs keep")
    jobs: int = Field(description="Jobs it has (deleted ones excluded)")
    gpu_seconds_this_month: float = Field(
        description="Worker time of its gpu-queue jobs since month_start: from each job's first start to its end"
    )
    month_start: datetime


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
    until_step: int | None = None
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


class ModelOut(BaseModel):
    """A trained style model: the model file of a succeeded style.train job, whose id it shares.

    Pass the id as a style.apply job's ``model``."""

    id: uuid.UUID = Field(description="The model's id: the id of the style.train job that trained it")
    method: str = Field(description="johnson: a feed-forward network for the styles it was trained on")
    styles: list[str]
    style_blend: list[float] | None
    size: int = Field(description="The side of the crops it was trained on, in pixels")
    steps: int
    width: int
    residual_blocks: int
    final_metrics: dict[str, float] = Field(description="Its losses at the end of training")
    source_job: uuid.UUID
    created_at: datetime = Field(description="When its training finished")
    bytes: int = Field(description="Size of model.safetensors")
    preview: str | None = Field(description="The final preview grid (held-out pictures, then the network's output)")
    card: str = Field(description="model.json: method, styles, training params, final losses")

    @classmethod
    def of(cls, model: StyleModel) -> ModelOut:
        """Render a model from its training job and file."""
        job, params = model.job, model.job.params
        base = f"/v1/jobs/{job.id}/artifacts"
        return cls(
            id=job.id,
            method=str(params.get("method", "johnson")),
            styles=[str(s) for s in params.get("styles", [])],
            style_blend=params.get("style_blend"),
            size=int(params.get("size", 0)),
            steps=int(params.get("steps", 0)),
            width=int(params.get("width", 0)),
            residual_blocks=int(params.get("residual_blocks", 0)),
            final_metrics={k: float(v) for k, v in (job.latest_metrics or {}).items()},
            source_job=job.id,
            created_at=job.finished_at or job.updated_at,
            bytes=model.artifact.size,
            preview=f"{base}/{model.preview}" if model.preview else None,
            card=f"{base}/{CARD_ARTIFACT}",
        )


class ModelPage(BaseModel):
    """A page of style models, newest first."""

    items: list[ModelOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    code: str
    message: str
    field: str | None = None
    request_id: str | None = Field(default=None, description="On a 500: quote it when reporting the error")


class ErrorOut(BaseModel):
    """Error envelope."""

    error: ErrorBody


# --- webhooks ---------------------------------------------------------------------------------


class WebhookAttemptOut(BaseModel):
    """One HTTP attempt at a delivery: the answer's status code, or the error that stopped it."""

    attempt: int
    started_at: datetime
    status_code: int | None
    latency_ms: float | None = Field(description="Until the answer's head, in milliseconds")
    error: str | None

    @classmethod
    def of(cls, attempt: WebhookAttempt) -> WebhookAttemptOut:
        """Render an attempt row."""
        return cls(
            attempt=attempt.attempt,
            started_at=attempt.started_at,
            status_code=attempt.status_code,
            latency_ms=attempt.latency_ms,
            error=attempt.error,
        )


class WebhookDeliveryOut(BaseModel):
    """One event sent (or being sent) to a job's webhook, with every attempt so far."""

    id: uuid.UUID = Field(description="The webhook-id header is msg_ + this id's hex, the same on every retry")
    event: WebhookEvent
    event_id: int = Field(description="The job event's id (as in the event stream)")
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: list[WebhookAttemptOut]
    next_attempt_at: datetime | None = Field(description="When the next attempt is due; null once delivered or failed")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, delivery: WebhookDelivery, attempts: list[WebhookAttempt]) -> WebhookDeliveryOut:
        """Render a delivery row and its attempts."""
        return cls(
            id=delivery.id,
            event=cast(WebhookEvent, delivery.event),
            event_id=delivery.event_seq,
            url=delivery.url,
            state=cast(Literal["pending", "delivered", "failed"], delivery.state),
            attempts=[WebhookAttemptOut.of(a) for a in attempts],
            next_attempt_at=delivery.next_attempt_at if delivery.state == "pending" else None,
            created_at=delivery.created_at,
            finished_at=delivery.finished_at,
        )


class WebhookDeliveryPage(BaseModel):
    """A page of a job's webhook deliveries, in event order."""

    items: list[WebhookDeliveryOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class WebhookSecretOut(BaseModel):
    """The tenant's webhook signing secret (Standard Webhooks: verify with it, base64 after ``whsec_``)."""

    secret: str
    previous_valid_until: datetime | None = Field(
        description="After a rotation the previous secret also signs every delivery until then; null if none"
    )


class TrialOut(BaseModel):
    """One trial of a sweep: a job, the params the sweep gave it, and its objective so far."""

    job_id: uuid.UUID
    params: dict[str, Any] = Field(description="The params the sweep varies, seed included")
    state: JobState
    step: int
    total: int
    objective: float | None = Field(description="The objective metric's latest value (final once it ended)")
    error: str | None = Field(default=None, description="The error code of a failed trial")
    early_stop: EarlyStopOut | None = Field(default=None, description="Why the rule stopped it (stopped_early)")

    @classmethod
    def of(cls, job: Job, metric: str) -> TrialOut:
        """Render a trial's job row."""
        value = job.latest_metrics.get(metric)
        return cls(
            job_id=job.id,
            params=job.sweep_params or {},
            state=JobState(job.state),
            step=job.progress_step,
            total=job.progress_total,
            objective=float(value) if isinstance(value, int | float) else None,
            error=job.error_code,
            early_stop=EarlyStopOut.of(job.early_stop),
        )


class ObjectiveOut(BaseModel):
    """What ranks the trials."""

    metric: str
    mode: Literal["min", "max"]


class SweepOut(BaseModel):
    """A sweep: every trial's params, state and objective, and the best finished trial."""

    id: uuid.UUID
    type: str
    state: Literal["running", "cancelling", "cancelled", "done"] = Field(
        description="running while a trial is queued or running; done when all ended; cancelled after a cancel"
    )
    objective: ObjectiveOut
    max_parallel: int
    early_stopping: dict[str, Any] | None = Field(description="The early-stopping rule, if the sweep has one")
    counts: dict[str, int] = Field(description="Trials per state")
    trials: list[TrialOut]
    best: TrialOut | None = Field(description="The succeeded trial with the best objective (None before one ends)")
    spec: dict[str, Any] = Field(description="The sweep as submitted (defaults filled in)")
    created_at: datetime

    @classmethod
    def of(cls, sweep: Sweep, jobs: list[Job]) -> SweepOut:
        """Render a sweep and its trials."""
        trials = [TrialOut.of(job, sweep.objective_metric) for job in jobs]
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.state.value] = counts.get(trial.state.value, 0) + 1
        live = any(not t.state.terminal for t in trials)
        if sweep.cancel_requested:
            state: Literal["running", "cancelling", "cancelled", "done"] = "cancelling" if live else "cancelled"
        else:
            state = "running" if live else "done"
        finished = [t for t in trials if t.state == JobState.SUCCEEDED and t.objective is not None]
        sign = 1.0 if sweep.objective_mode == "min" else -1.0
        best = min(finished, key=lambda t: sign * (t.objective or 0.0)) if finished else None
        return cls(
            id=sweep.id,
            type=sweep.type,
            state=state,
            objective=ObjectiveOut(
                metric=sweep.objective_metric, mode=cast(Literal["min", "max"], sweep.objective_mode)
            ),
            max_parallel=sweep.max_parallel,
            early_stopping=sweep.spec.get("early_stopping"),
            counts=counts,
            trials=trials,
            best=best,
            spec=sweep.spec,
            created_at=sweep.created_at,
        )


class SweepSummary(BaseModel):
    """A sweep in a listing."""

    id: uuid.UUID
    type: str
    objective: ObjectiveOut
    max_parallel: int
    early_stopping: dict[str, Any] | None = Field(description="The early-stopping rule, if the sweep has one")
    created_at: datetime

    @classmethod
    def of(cls, sweep: Sweep) -> SweepSummary:
        """Render a sweep row without its trials."""
        return cls(
            id=sweep.id,
            type=sweep.type,
            objective=ObjectiveOut(
                metric=sweep.objective_metric, mode=cast(Literal["min", "max"], sweep.objective_mode)
            ),
            max_parallel=sweep.max_parallel,
            early_stopping=sweep.spec.get("early_stopping"),
            created_at=sweep.created_at,
        )


class SweepPage(BaseModel):
    """One page of sweeps, newest first."""

    items: list[SweepSummary]
    next_cursor: str | None
