"""Typed results: dataclasses parsed from the API's JSON. Unknown fields are ignored and absent
optional ones take defaults, so a newer server does not break an older client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

T = TypeVar("T")

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "stopped_early"})

# --- tolerant readers ------------------------------------------------------------------------


def _early_stop(data: Mapping[str, Any]) -> str | None:
    """The message of a stopped_early job's ``early_stop`` object."""
    value = data.get("early_stop")
    return _opt_str(value, "message") if isinstance(value, Mapping) else None


def _str(data: Mapping[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return value if isinstance(value, str) else default


def _int(data: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _opt_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _dict(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return dict(value) if isinstance(value, Mapping) else {}


def _list(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return list(value) if isinstance(value, list) else []


def _time(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _floats(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}


# --- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JobError:
    """Why a job failed: a stable ``code`` (e.g. ``diverged``) and a message."""

    code: str
    message: str

    @classmethod
    def from_dict(cls, data: Any) -> JobError | None:
        """Parse an ``error`` object; None for null."""
        if not isinstance(data, Mapping):
            return None
        return cls(code=_str(data, "code", "error"), message=_str(data, "message"))


@dataclass(frozen=True, kw_only=True)
class Progress:
    """How far a job got, with the server's smoothed speed and ETA."""

    step: int = 0
    total: int = 0
    fraction: float = 0.0
    steps_per_second: float | None = None
    eta_seconds: float | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Progress:
        """Parse a ``progress`` object."""
        if not isinstance(data, Mapping):
            return cls()
        step, total = _int(data, "step"), _int(data, "total")
        fraction = _opt_float(data, "fraction")
        return cls(
            step=step,
            total=total,
            fraction=fraction if fraction is not None else (step / total if total else 0.0),
            steps_per_second=_opt_float(data, "steps_per_second"),
            eta_seconds=_opt_float(data, "eta_seconds"),
        )


@dataclass(frozen=True, kw_only=True)
class Job:
    """A job as ``GET /v1/jobs/{id}`` returns it."""

    id: str
    type: str
    state: str
    params: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    max_attempts: int = 0
    handbacks: int = 0
    cancel_requested: bool = False
    progress: Progress = field(default_factory=Progress)
    latest_metrics: dict[str, float] = field(default_factory=dict)  # the API's ``metrics``: last value of each
    warnings: list[str] = field(default_factory=list)
    error: JobError | None = None
    early_stop: str | None = None  # a stopped_early sweep trial: why its sweep's rule stopped it
    sweep_id: str | None = None  # the sweep this job is a trial of
    checkpoint_step: int | None = None
    resumed_from_step: int | None = None
    worker: str | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] = field(default_factory=list)
    priority: str = "normal"
    queue_position: int | None = None  # a queued job's approximate place (1: next), on GET of one job
    pending_reason: str | None = None  # why a queued job has not started, on GET of one job
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """Parse a job object."""
        checkpoint = data.get("checkpoint")
        queueing = data.get("queueing")
        return cls(
            id=_str(data, "id"),
            type=_str(data, "type"),
            state=_str(data, "state", "unknown"),
            params=_dict(data, "params"),
            attempt=_int(data, "attempt"),
            max_attempts=_int(data, "max_attempts"),
            handbacks=_int(data, "handbacks"),
            cancel_requested=data.get("cancel_requested") is True,
            progress=Progress.from_dict(data.get("progress")),
            latest_metrics=_floats(data.get("metrics")),
            warnings=[w for w in _list(data, "warnings") if isinstance(w, str)],
            error=JobError.from_dict(data.get("error")),
            early_stop=_early_stop(data),
            sweep_id=_opt_str(data, "sweep_id"),
            checkpoint_step=_opt_int(checkpoint, "step") if isinstance(checkpoint, Mapping) else None,
            resumed_from_step=_opt_int(data, "resumed_from_step"),
            worker=_opt_str(data, "worker"),
            webhook=_opt_str(data, "webhook"),
            webhook_events_filter=[e for e in _list(data, "webhook_events_filter") if isinstance(e, str)],
            priority=_str(data, "priority", "normal"),
            queue_position=_opt_int(queueing, "position") if isinstance(queueing, Mapping) else None,
            pending_reason=_opt_str(queueing, "reason") if isinstance(queueing, Mapping) else None,
            created_at=_time(data, "created_at"),
            started_at=_time(data, "started_at"),
            finished_at=_time(data, "finished_at"),
            updated_at=_time(data, "updated_at"),
        )

    @property
    def done(self) -> bool:
        """Whether the job has ended (succeeded, failed, cancelled or stopped_early)."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        """Whether the job ended successfully."""
        return self.state == "succeeded"


@dataclass(frozen=True, kw_only=True)
class Page(Generic[T]):
    """One page of a cursor-paginated list; ``next_cursor`` is None on the last."""

    items: list[T]
    next_cursor: str | None = None


# --- artifacts, metrics, uploads -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Artifact:
    """A stored output of a job (sample grid, weights, image); ``name`` may contain ``/``."""

    name: str
    kind: str = ""
    size: int = 0
    sha256: str = ""
    content_type: str = "application/octet-stream"
    created_at: datetime | None = None
    url: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Artifact:
        """Parse an artifact object."""
        return cls(
            name=_str(data, "name"),
            kind=_str(data, "kind"),
            size=_int(data, "size"),
            sha256=_str(data, "sha256"),
            content_type=_str(data, "content_type", "application/octet-stream"),
            created_at=_time(data, "created_at"),
            url=_str(data, "url"),
        )


@dataclass(frozen=True, kw_only=True)
class MetricPoint:
    """One point of a series; when downsampled, the mean of a bucket ending at ``step``."""

    step: int
    value: float
    min: float
    max: float
    count: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricPoint:
        """Parse a point."""
        value = _opt_float(data, "value") or 0.0
        low, high = _opt_float(data, "min"), _opt_float(data, "max")
        return cls(
            step=_int(data, "step"),
            value=value,
            min=value if low is None else low,
            max=value if high is None else high,
            count=_int(data, "count", 1),
        )


@dataclass(frozen=True, kw_only=True)
class MetricSeries:
    """The history of one metric, oldest step first."""

    name: str
    points: list[MetricPoint]

    @property
    def steps(self) -> list[int]:
        """The steps of the points."""
        return [p.step for p in self.points]

    @property
    def values(self) -> list[float]:
        """The values of the points."""
        return [p.value for p in self.points]

    @classmethod
    def from_response(cls, data: Mapping[str, Any]) -> dict[str, MetricSeries]:
        """Parse ``GET /v1/jobs/{id}/metrics`` into one series per name."""
        series = data.get("series")
        if not isinstance(series, Mapping):
            return {}
        return {
            str(name): cls(name=str(name), points=[MetricPoint.from_dict(p) for p in points if isinstance(p, Mapping)])
            for name, points in series.items()
            if isinstance(points, list)
        }


@dataclass(frozen=True, kw_only=True)
class UploadFile:
    """One file of an upload (width and height are 0 for a weights file)."""

    path: str
    width: int = 0
    height: int = 0
    bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class Upload:
    """An image set, single image or weights file, usable by id as a dataset or style input."""

    id: str
    kind: str = "images"
    filename: str = ""
    file_count: int = 0
    total_bytes: int = 0
    classes: list[str] = field(default_factory=list)
    files: list[UploadFile] = field(default_factory=list)
    created_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Upload:
        """Parse an upload object."""
        return cls(
            id=_str(data, "id"),
            kind=_str(data, "kind", "images"),
            filename=_str(data, "filename"),
            file_count=_int(data, "file_count"),
            total_bytes=_int(data, "total_bytes"),
            classes=[c for c in _list(data, "classes") if isinstance(c, str)],
            files=[
                UploadFile(
                    path=_str(f, "path"), width=_int(f, "width"), height=_int(f, "height"), bytes=_int(f, "bytes")
                )
                for f in _list(data, "files")
                if isinstance(f, Mapping)
            ],
            created_at=_time(data, "created_at"),
        )


# --- style models ----------------------------------------------------------------------------


def _opt_floats(data: Mapping[str, Any], key: str) -> list[float] | None:
    value = data.get(key)
    if not isinstance(value, list):
        return None
    return [float(v) for v in value if isinstance(v, int | float) and not isinstance(v, bool)]


@dataclass(frozen=True, kw_only=True)
class Model:
    """A trained style model as ``GET /v1/models/{id}`` returns it; its id is that of the style.train job that made it.

    ``preview`` (None when there is none) and ``card`` are the API paths of its ``preview.png`` and
    ``model.json`` artifacts; ``bytes`` is the size of its weights.
    """

    id: str
    method: str = ""
    styles: list[str] = field(default_factory=list)
    style_blend: list[float] | None = None
    size: int = 0
    steps: int = 0
    width: int = 0
    residual_blocks: int = 0
    final_metrics: dict[str, float] = field(default_factory=dict)
    source_job: str = ""
    created_at: datetime | None = None
    bytes: int = 0
    preview: str | None = None
    card: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Model:
        """Parse a model object."""
        return cls(
            id=_str(data, "id"),
            method=_str(data, "method"),
            styles=[s for s in _list(data, "styles") if isinstance(s, str)],
            style_blend=_opt_floats(data, "style_blend"),
            size=_int(data, "size"),
            steps=_int(data, "steps"),
            width=_int(data, "width"),
            residual_blocks=_int(data, "residual_blocks"),
            final_metrics=_floats(data.get("final_metrics")),
            source_job=_str(data, "source_job"),
            created_at=_time(data, "created_at"),
            bytes=_int(data, "bytes"),
            preview=_opt_str(data, "preview"),
            card=_str(data, "card"),
        )


# --- webhooks --------------------------------------------------------------------------------

WEBHOOK_MESSAGE_PREFIX = "msg_"


@dataclass(frozen=True, kw_only=True)
class WebhookAttempt:
    """One HTTP attempt at a delivery: the receiver's status code and how long it took to answer,
    or the error that stopped it (a timeout, a refused connection, an address no longer allowed)."""

    attempt: int
    started_at: datetime | None = None
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebhookAttempt:
        """Parse an attempt object."""
        return cls(
            attempt=_int(data, "attempt"),
            started_at=_time(data, "started_at"),
            status_code=_opt_int(data, "status_code"),
            latency_ms=_opt_float(data, "latency_ms"),
            error=_opt_str(data, "error"),
        )

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True, kw_only=True)
class WebhookDelivery:
    """One event sent (or being sent) to a job's webhook, with every attempt so far, oldest first.

    ``state`` is ``pending`` (``next_attempt_at`` says when it is tried next), ``delivered`` or
    ``failed`` (every retry used up); ``event_id`` is the job event's id, as in its event stream.
    """

    id: str
    event: str
    event_id: int
    url: str
    state: str
    attempts: list[WebhookAttempt] = field(default_factory=list)
    next_attempt_at: datetime | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebhookDelivery:
        """Parse a delivery object."""
        return cls(
            id=_str(data, "id"),
            event=_str(data, "event"),
            event_id=_int(data, "event_id"),
            url=_str(data, "url"),
            state=_str(data, "state", "unknown"),
            attempts=[WebhookAttempt.from_dict(a) for a in _list(data, "attempts") if isinstance(a, Mapping)],
            next_attempt_at=_time(data, "next_attempt_at"),
            created_at=_time(data, "created_at"),
            finished_at=_time(data, "finished_at"),
        )

    @property
    def message_id(self) -> str:
        """The ``webhook-id`` header the receiver got (the same on every retry): ``msg_`` + the id's hex."""
        return WEBHOOK_MESSAGE_PREFIX + self.id.replace("-", "")

    @property
    def delivered(self) -> bool:
        """Whether the receiver accepted it (a 2xx)."""
        return self.state == "delivered"


@dataclass(frozen=True, kw_only=True)
class WebhookSecret:
    """The tenant's webhook signing secret (``whsec_`` + base64; Standard Webhooks). After a rotation
    the previous secret also signs every delivery until ``previous_valid_until``."""

    secret: str = field(repr=False)
    previous_valid_until: datetime | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WebhookSecret:
        """Parse a secret object; ValueError if it holds none."""
        secret = data.get("secret")
        if not isinstance(secret, str) or not secret:
            raise ValueError("the answer holds no secret")
        return cls(secret=secret, previous_valid_until=_time(data, "previous_valid_until"))


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StateChange:
    """A ``state`` event: the job moved to ``state`` (on ``attempt``)."""

    state: str
    attempt: int
    error: JobError | None
    ts: float | None


@dataclass(frozen=True, kw_only=True)
class ProgressUpdate:
    """A ``progress`` event."""

    step: int
    total: int
    steps_per_second: float | None
    eta_seconds: float | None
    ts: float | None


@dataclass(frozen=True, kw_only=True)
class MetricsUpdate:
    """A ``metrics`` event: the values logged at ``step``."""

    step: int
    values: dict[str, float]
    ts: float | None


@dataclass(frozen=True, kw_only=True)
class WarningRaised:
    """A ``warning`` event (e.g. a discriminator that wins too easily)."""

    message: str
    ts: float | None


@dataclass(frozen=True, kw_only=True)
class ArtifactSaved:
    """An ``artifact`` event: a new output was stored."""

    name: str
    kind: str
    step: int | None
    size: int
    content_type: str
    ts: float | None


@dataclass(frozen=True, kw_only=True)
class Done:
    """The ``done`` event, the stream's last: the job's final state."""

    state: str
    error: JobError | None
    ts: float | None


Payload = StateChange | ProgressUpdate | MetricsUpdate | WarningRaised | ArtifactSaved | Done


def _payload(kind: str, data: Mapping[str, Any]) -> Payload | None:
    ts = _opt_float(data, "ts")
    if kind == "state":
        return StateChange(
            state=_str(data, "state"), attempt=_int(data, "attempt"), error=JobError.from_dict(data.get("error")), ts=ts
        )
    if kind == "progress":
        return ProgressUpdate(
            step=_int(data, "step"),
            total=_int(data, "total"),
            steps_per_second=_opt_float(data, "steps_per_second"),
            eta_seconds=_opt_float(data, "eta_seconds"),
            ts=ts,
        )
    if kind == "metrics":
        return MetricsUpdate(step=_int(data, "step"), values=_floats(data.get("values")), ts=ts)
    if kind == "warning":
        return WarningRaised(message=_str(data, "message"), ts=ts)
    if kind == "artifact":
        return ArtifactSaved(
            name=_str(data, "name"),
            kind=_str(data, "kind"),
            step=_opt_int(data, "step"),
            size=_int(data, "size"),
            content_type=_str(data, "content_type"),
            ts=ts,
        )
    if kind == "done":
        return Done(state=_str(data, "state"), error=JobError.from_dict(data.get("error")), ts=ts)
    return None


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event of a job's stream: its ``id`` (1, 2, 3, … per job), ``type``, raw ``data`` and
    the typed ``payload`` (None for a type this client does not know)."""

    id: int | None
    type: str
    data: dict[str, Any]
    payload: Payload | None

    @classmethod
    def parse(cls, *, id: int | None, type: str, data: Mapping[str, Any]) -> Event:
        """Build an event from its SSE fields and decoded data."""
        return cls(id=id, type=type, data=dict(data), payload=_payload(type, data))


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One trial of a sweep: a job, the params the sweep gave it (seed included) and its objective so far."""

    job_id: str
    params: dict[str, Any] = field(default_factory=dict)
    state: str = "unknown"
    step: int = 0
    total: int = 0
    objective: float | None = None
    error: str | None = None
    early_stop: str | None = None  # stopped_early: why the rule stopped it

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        """Parse a trial object."""
        return cls(
            job_id=_str(data, "job_id"),
            params=_dict(data, "params"),
            state=_str(data, "state", "unknown"),
            step=_int(data, "step"),
            total=_int(data, "total"),
            objective=_opt_float(data, "objective"),
            error=_opt_str(data, "error"),
            early_stop=_early_stop(data),
        )


@dataclass(frozen=True, kw_only=True)
class Sweep:
    """A sweep as ``GET /v1/sweeps/{id}`` returns it (a listing leaves trials, counts and best empty)."""

    id: str
    type: str = ""
    state: str = "unknown"  # running, cancelling, cancelled or done
    metric: str = ""
    mode: str = ""
    max_parallel: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    created_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sweep:
        """Parse a sweep object."""
        objective = data.get("objective")
        objective = objective if isinstance(objective, Mapping) else {}
        counts = data.get("counts")
        best = data.get("best")
        return cls(
            id=_str(data, "id"),
            type=_str(data, "type"),
            state=_str(data, "state", "unknown"),
            metric=_str(objective, "metric"),
            mode=_str(objective, "mode"),
            max_parallel=_int(data, "max_parallel"),
            counts={k: v for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, Mapping) else {},
            trials=[Trial.from_dict(t) for t in _list(data, "trials") if isinstance(t, Mapping)],
            best=Trial.from_dict(best) if isinstance(best, Mapping) else None,
            created_at=_time(data, "created_at"),
        )

    @property
    def done(self) -> bool:
        """Whether every trial has ended."""
        return self.state in ("done", "cancelled")


@dataclass(frozen=True, kw_only=True)
class Deletion:
    """What ``DELETE /v1/jobs/{id}`` answered: the job is gone for every read; its data goes in the background."""

    id: str
    stopping: bool = False  # it was running: it stops within a step, then its data goes
    detail: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Deletion:
        """Parse a deletion answer."""
        return cls(id=_str(data, "id"), stopping=data.get("stopping") is True, detail=_str(data, "detail"))


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What ``GET /v1/usage`` answers: stored bytes by kind against the quota, metric rows, GPU time this month."""

    artifacts_bytes: int = 0
    checkpoints_bytes: int = 0
    uploads_bytes: int = 0
    total_bytes: int = 0
    quota_bytes: int | None = None
    left_bytes: int | None = None
    metric_rows: int = 0
    jobs: int = 0
    gpu_seconds_this_month: float = 0.0
    month_start: datetime | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """Parse a usage answer."""
        stored = data.get("stored")
        stored = stored if isinstance(stored, Mapping) else {}
        return cls(
            artifacts_bytes=_int(stored, "artifacts"),
            checkpoints_bytes=_int(stored, "checkpoints"),
            uploads_bytes=_int(stored, "uploads"),
            total_bytes=_int(stored, "total"),
            quota_bytes=_opt_int(data, "storage_quota_bytes"),
            left_bytes=_opt_int(data, "storage_left_bytes"),
            metric_rows=_int(data, "metric_rows"),
            jobs=_int(data, "jobs"),
            gpu_seconds_this_month=_opt_float(data, "gpu_seconds_this_month") or 0.0,
            month_start=_time(data, "month_start"),
        )
