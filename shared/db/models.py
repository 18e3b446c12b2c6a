"""SQLAlchemy 2.0 models. Schema changes go through Alembic (shared/db/migrations)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "stopped_early")


class Base(DeclarativeBase):
    """Declarative base of every table."""


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid.uuid4)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Tenant(Base):
    """A customer; everything else belongs to one."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    max_active_jobs: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("100"))
    # Fair share: the tenant's share of each queue's workers is in proportion to this weight.
    share_weight: Mapped[float] = mapped_column(Double, nullable=False, server_default=text("1"))
    # At most this many of its jobs run at once on each queue (None: no limit but fair share).
    max_running_jobs: Mapped[int | None] = mapped_column(Integer)
    # Bytes its artifacts, checkpoints and uploads may hold (None: no quota): shared/db/queries/usage.py.
    max_storage_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # Retention (workers/retention.py), for jobs that ended: None keeps for ever.
    keep_checkpoints_days: Mapped[int | None] = mapped_column(Integer)  # then the checkpoint goes (outputs stay)
    keep_full_metrics_days: Mapped[int | None] = mapped_column(Integer)  # then each series is downsampled...
    metrics_points_kept: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1000"))  # ...to this
    keep_jobs_days: Mapped[int | None] = mapped_column(Integer)  # then the whole job is deleted
    # Standard Webhooks signing secret ("whsec_" + base64); the previous one also signs for a day after a rotation.
    webhook_secret: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_previous: Mapped[str | None] = mapped_column(String(100))
    webhook_secret_rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("share_weight > 0", name="ck_tenants_share_weight"),
        CheckConstraint("max_running_jobs IS NULL OR max_running_jobs >= 1", name="ck_tenants_max_running_jobs"),
        CheckConstraint("max_storage_bytes IS NULL OR max_storage_bytes >= 0", name="ck_tenants_max_storage_bytes"),
        CheckConstraint(
            "coalesce(keep_checkpoints_days, 0) >= 0 AND coalesce(keep_full_metrics_days, 0) >= 0 "
            "AND coalesce(keep_jobs_days, 1) >= 1 AND metrics_points_kept >= 10",
            name="ck_tenants_retention",
        ),
    )


class ApiKey(Base):
    """A bearer key. Only its SHA-256 is stored; ``prefix`` identifies it to humans."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    prefix: Mapped[str] = mapped_column(String(32), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    label: Mapped[str] = mapped_column(String(200), nullable=False, server_default="")
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Upload(Base):
    """A set of user images (one image, a folder, or an unpacked archive), or one weights file, in the object store."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    filename: Mapped[str] = mapped_column(String(500), nullable=False, server_default="")
    # "images": a dataset or content/style images; "weights": one torch.save file (VGG state_dict).
    kind: Mapped[str] = mapped_column(String(16), nullable=False, server_default="images")
    file_count: Mapped[int] = mapped_column(Integer, nullable=False)
    total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    # [{"path": "cats/a.png", "key": "uploads/<t>/<id>/cats/a.png", "width": .., "height": .., "bytes": ..}]
    manifest: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, nullable=False)
    classes: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = _created()
    # DELETE /v1/uploads/{id}: gone for the API from then on; workers/lifecycle.py purges its objects and row.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_uploads_tenant_created", "tenant_id", "created_at"),
        CheckConstraint("kind IN ('images', 'weights')", name="ck_uploads_kind"),
    )


class Job(Base):
    """A unit of work. Postgres is its source of truth; Redis only carries its id."""

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    queue: Mapped[str] = mapped_column(String(32), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="queued")
    # Fencing token: incremented by every successful claim; every runner write carries it.
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("3"))
    # Attempts a worker handed back on shutdown (SIGTERM): they don't count against max_attempts.
    handbacks: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    progress_step: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    progress_total: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    steps_per_s: Mapped[float | None] = mapped_column(Double)
    latest_metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    warnings: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    # Orders a tenant's own queued jobs (shared/jobs/states.py: PRIORITIES); fair share orders tenants.
    priority: Mapped[int] = mapped_column(SmallInteger, nullable=False, server_default=text("1"))
    checkpoint_key: Mapped[str | None] = mapped_column(String(1000))
    checkpoint_step: Mapped[int | None] = mapped_column(Integer)
    # The size of the object checkpoint_key names (the runner deletes the one it replaces).
    checkpoint_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))
    resumed_from_step: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    # The last event's id in job_events (ids are dense per job: 1, 2, 3, ...).
    event_seq: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    webhook_events: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    webhook_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the current attempt's claim
    # The device memory the job needs (admission's estimate); a worker with less free never claims it.
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # A sweep's trial: its sweep, and the params the sweep varies for it (seed included).
    sweep_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"))
    sweep_params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Why the sweep's early-stopping rule stopped this trial (state stopped_early): shared/jobs/sweeps.py Verdict.
    early_stop: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # DELETE /v1/jobs/{id}: gone for the API from then on; workers/lifecycle.py purges objects and rows.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When retention last downsampled its metrics (workers/retention.py): done once per job.
    retained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint(f"state IN {JOB_STATES!r}", name="ck_jobs_state"),
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_jobs_state_lease", "state", "lease_expires_at"),
        Index(
            "ix_jobs_queued_pick",
            "queue",
            "tenant_id",
            text("priority DESC"),
            "created_at",
            "id",
            postgresql_where=text("state = 'queued'"),
        ),
        Index(
            "ix_jobs_queue_usage", "queue", "tenant_id", "finished_at", postgresql_where=text("claimed_at IS NOT NULL")
        ),
        Index("ix_jobs_sweep", "sweep_id", "state", postgresql_where=text("sweep_id IS NOT NULL")),
        Index("ix_jobs_deleted", "deleted_at", postgresql_where=text("deleted_at IS NOT NULL")),
    )


class Sweep(Base):
    """A hyperparameter sweep: its trials are jobs (jobs.sweep_id), at most max_parallel running at once."""

    __tablename__ = "sweeps"

    id: Mapped[uuid.UUID] = _uuid_pk()
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)  # the request, as validated
    objective_metric: Mapped[str] = mapped_column(String(64), nullable=False)
    objective_mode: Mapped[str] = mapped_column(String(8), nullable=False)
    max_parallel: Mapped[int] = mapped_column(Integer, nullable=False)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    created_at: Mapped[datetime] = _created()

    __table_args__ = (
        CheckConstraint("objective_mode IN ('min', 'max')", name="ck_sweeps_objective_mode"),
        CheckConstraint("max_parallel >= 1", name="ck_sweeps_max_parallel"),
        Index("ix_sweeps_tenant_created", "tenant_id", "created_at", "id"),
    )


class WorkerPresence(Base):
    """A worker process's advertised device, refreshed while it lives (workers/presence.py)."""

    __tablename__ = "worker_presence"

    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list[str]] = mapped_column(JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    device: Mapped[str] = mapped_column(String(200), nullable=False)
    memory_total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_free_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Metric(Base):
    """One scalar of the loss history. (job, name, step) is unique: replays overwrite."""

    __tablename__ = "metrics"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Double, nullable=False)
    # A row that stands for a downsampled bucket (retention): value is the bucket's mean over ``samples`` points,
    # value_min and value_max its extremes. NULL on a point as the runner wrote it.
    value_min: Mapped[float | None] = mapped_column(Double)
    value_max: Mapped[float | None] = mapped_column(Double)
    samples: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Artifact(Base):
    """A named output of a job, stored in the object store."""

    __tablename__ = "artifacts"

    id: Mapped[uuid.UUID] = _uuid_pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(300), nullable=False)
    key: Mapped[str] = mapped_column(String(1000), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    content_type: Mapped[str] = mapped_column(String(100), nullable=False)
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = _created()

    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)


class JobEvent(Base):
    """One entry of a job's event log: what the SSE stream sends and a reconnecting client replays."""

    __tablename__ = "job_events"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _created()


class WebhookDelivery(Base):
    """One event to deliver to a job's webhook (an outbox row, written with the event)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = _uuid_pk()
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    event_seq: Mapped[int] = mapped_column(Integer, nullable=False)
    event: Mapped[str] = mapped_column(String(16), nullable=False)  # start, progress, artifact, completed
    url: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)  # the exact bytes every attempt sends
    state: Mapped[str] = mapped_column(String(16), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="ck_webhook_deliveries_state"),
        Index("ix_webhook_deliveries_job", "job_id", "created_at"),
        Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
    )


class WebhookAttempt(Base):
    """One HTTP attempt at a delivery: status code, latency, error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_attempts_delivery", "delivery_id", "attempt"),)
