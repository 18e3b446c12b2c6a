"""The API's reads and writes: tenants, keys, jobs, metrics, artifacts and uploads, each scoped
by tenant (someone else's id is NotFound)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import ApiKey, Artifact, Job, Sweep, Tenant, Upload
from shared.db.queries.events import append_events, state_event, terminal_events
from shared.errors import Conflict, InvalidInput, NotFound, TooManyRequests
from shared.jobs.states import DEFAULT_PRIORITY, PRIORITIES, JobState
from shared.jobs.style_apply import MODEL_JOB_TYPE
from shared.jobs.style_train import CARD_ARTIFACT as MODEL_CARD
from shared.jobs.style_train import FINAL_PREVIEW_ARTIFACT as MODEL_PREVIEW
from shared.jobs.style_train import MODEL_ARTIFACT as MODEL_FILE
from shared.names import check_name, control_character
from shared.security import display_prefix, hash_key, new_api_key

ACTIVE_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)
LAST_STEP = 2**31 - 1  # the largest step metrics.step (INTEGER) holds: metric_series' bound when none is asked


# --- tenants and keys ---------------------------------------------------------------


def create_tenant(session: Session, *, name: str) -> Tenant:
    """Create a tenant; Conflict if the name is taken."""
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise Conflict(f"tenant {name!r} already exists", field="name")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant_by_name(session: Session, *, name: str) -> Tenant:
    """The tenant called ``name``."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"tenant {name!r} not found", field="name")
    return tenant


def create_api_key(session: Session, *, tenant_id: uuid.UUID, label: str = "") -> tuple[ApiKey, str]:
    """Mint a key; returns the row and the raw key, which is never stored."""
    raw = new_api_key()
    key = ApiKey(tenant_id=tenant_id, prefix=display_prefix(raw), key_hash=hash_key(raw), label=label)
    session.add(key)
    session.flush()
    return key, raw


def authenticate(session: Session, *, raw_key: str) -> uuid.UUID | None:
    """The tenant a live key belongs to, or None.

    The lookup is by the key's SHA-256: the database compares hashes, never secrets, so
    timing reveals nothing about the key.
    """
    row = session.execute(
        select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(raw_key), ApiKey.revoked_at.is_(None))
    ).first()
    return row[0] if row else None


def revoke_api_key(session: Session, *, prefix: str) -> int:
    """Revoke every live key with this display prefix; returns how many."""
    result = session.execute(
        update(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)).values(revoked_at=func.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- jobs: API side -----------------------------------------------------------------


def create_job(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    job_type: str,
    params: dict[str, Any],
    queue: str,
    total: int,
    max_attempts: int,
    idempotency_key: str | None,
    webhook_url: str | None = None,
    webhook_events: Sequence[str] = (),
    priority: int = PRIORITIES[DEFAULT_PRIORITY],
    memory_bytes: int | None = None,
    sweep_id: uuid.UUID | None = None,
    sweep_params: dict[str, Any] | None = None,
) -> tuple[Job, bool]:
    """Insert a queued job; with an idempotency key, a repeat returns the first job.

    Returns (job, created). A repeated key with a different body is a Conflict. The tenant's
    row stays locked until the caller's transaction ends, so concurrent submits of one tenant
    count and insert one at a time and ``max_active_jobs`` holds exactly.
    """
    # FOR NO KEY UPDATE: submits of one tenant queue here; inserts that only reference the
    # tenant (uploads, keys, other tenants' jobs) take KEY SHARE and never wait on it.
    limit = session.scalar(select(Tenant.max_active_jobs).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    if idempotency_key is not None:
        existing = session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key))
        if existing is not None:  # a repeat creates nothing, so it is answered even at the quota
            if existing.deleted_at is not None:
                raise Conflict(
                    f"Idempotency-Key: job {existing.id} with this key is being deleted; retry in a minute",
                    field="Idempotency-Key",
                )
            return _repeat(existing, job_type=job_type, params=params), False
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.state.in_(ACTIVE_STATES))
    )
    if limit is not None and active is not None and active >= limit:
        raise TooManyRequests(f"tenant has {active} queued or running jobs; the limit is {limit}")
    values = {
        "id": uuid.uuid4(),
        "tenant_id": tenant_id,
        "type": job_type,
        "params": params,
        "queue": queue,
        "progress_total": total,
        "max_attempts": max_attempts,
        "idempotency_key": idempotency_key,
        "webhook_url": webhook_url,
        "webhook_events": list(webhook_events),
        "priority": priority,
        "memory_bytes": memory_bytes,
        "sweep_id": sweep_id,
        "sweep_params": sweep_params,
        # The statement's time, not the transaction's: jobs made together (a sweep's trials) keep their order.
        "created_at": func.clock_timestamp(),
    }
    stmt = insert(Job).values(**values)
    if idempotency_key is not None:
        stmt = stmt.on_conflict_do_nothing(constraint="uq_jobs_tenant_idempotency")
    inserted = session.execute(stmt.returning(Job.id)).scalar()
    if inserted is not None:
        append_events(session, job_id=inserted, items=[state_event(JobState.QUEUED.value, attempt=0)])
        return get_job(session, tenant_id=tenant_id, job_id=inserted), True
    existing = session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key))
    if existing is None:  # pragma: no cover - the conflicting row was deleted meanwhile
        raise Conflict("idempotency key collided with a vanished job; retry")
    return _repeat(existing, job_type=job_type, params=params), False


def _repeat(existing: Job, *, job_type: str, params: dict[str, Any]) -> Job:
    """The job a repeated Idempotency-Key names; Conflict if the repeat asks for something else."""
    if existing.type != job_type or existing.params != params:
        raise Conflict("Idempotency-Key was already used for a different request", field="Idempotency-Key")
    return existing


def get_job(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """The caller's job; NotFound for anyone else's, or one being deleted."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id, Job.deleted_at.is_(None)))
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


@dataclass(frozen=True)
class Page:
    """One page of a cursor-paginated listing."""

    items: list[Any]
    next_cursor: str | None


def _encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        stamp, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not a cursor this API returned", field="cursor") from exc


def _paginate(
    session: Session,
    query: Select[Any],
    model: type[Job] | type[Upload] | type[Sweep],
    *,
    limit: int,
    cursor: str | None,
) -> Page:
    """Newest first by (created_at, id); the cursor is the last row seen."""
    if cursor is not None:
        created_at, row_id = _decode_cursor(cursor)
        query = query.where(or_(model.created_at < created_at, and_(model.created_at == created_at, model.id < row_id)))
    rows = list(session.scalars(query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return Page(items=rows, next_cursor=next_cursor)


def list_jobs(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    state: str | None,
    job_type: str | None,
    limit: int,
    cursor: str | None,
) -> Page:
    """Newest first; the cursor is the (created_at, id) of the last row seen."""
    query = select(Job).where(Job.tenant_id == tenant_id, Job.deleted_at.is_(None))
    if state is not None:
        query = query.where(Job.state == state)
    if job_type is not None:
        query = query.where(Job.type == job_type)
    return _paginate(session, query, Job, limit=limit, cursor=cursor)


def request_cancel(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next step."""
    job = session.scalar(
        select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id, Job.deleted_at.is_(None)).with_for_update()
    )
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.state == JobState.QUEUED:
        job.state = JobState.CANCELLED.value
        job.cancel_requested = True
        job.finished_at = func.now()
        session.flush()
        append_events(session, job_id=job_id, items=terminal_events(JobState.CANCELLED.value, attempt=job.attempt))
    elif job.state == JobState.RUNNING:
        job.cancel_requested = True
    elif job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED_EARLY):
        raise Conflict(f"job {job_id} already {job.state}; nothing to cancel", field="state")
    session.flush()
    session.refresh(job)
    return job


@dataclass(frozen=True)
class MetricPoint:
    """One (possibly downsampled) point of a metric series."""

    step: int
    value: float
    min: float
    max: float
    count: int


def metric_names(session: Session, *, job_id: uuid.UUID) -> list[str]:
    """Every metric name recorded for a job.

    A skip scan of the primary key (job, name, step): one index probe per name, not a pass over
    every row as DISTINCT would make (a 100,000-step run has about a million rows).
    """
    rows = session.execute(
        text(
            """
            WITH RECURSIVE n AS (
                (SELECT name FROM metrics WHERE job_id = :job_id ORDER BY name LIMIT 1)
                UNION ALL
                SELECT (SELECT m.name FROM metrics AS m
                        WHERE m.job_id = :job_id AND m.name > n.name ORDER BY m.name LIMIT 1)
                FROM n WHERE n.name IS NOT NULL
            )
            SELECT name FROM n WHERE name IS NOT NULL
            """
        ),
        {"job_id": job_id},
    )
    return [name for (name,) in rows]


def metric_series(
    session: Session,
    *,
    job_id: uuid.UUID,
    names: Sequence[str],
    since_step: int,
    max_points: int,
    until_step: int | None = None,
) -> dict[str, list[MetricPoint]]:
    """Series in (``since_step``, ``until_step``]; each longer than ``max_points`` there is bucketed server-side.

    A bucket reports its last step, the mean value, and the min and max it covers. Buckets are
    ``max_points`` equal step ranges between a series' first and last step in the range asked for,
    so a client that zooms into a range gets finer buckets there, and a series logged every step
    with no more points than ``max_points`` comes back point by point. The ends of each series are
    two index probes; then one pass groups the rows (no window over the whole history). A row retention
    downsampled stands for its ``samples`` points: it weighs that much in the mean, and brings their min and max
    (workers/retention.py), so a series downsampled to K points answers any ``max_points`` dividing K as before.
    """
    rows = session.execute(
        text(
            """
            WITH b AS (
                SELECT s.name, lo.step AS lo, hi.step AS hi
                FROM unnest(CAST(:names AS text[])) AS s(name)
                CROSS JOIN LATERAL (
                    SELECT step FROM metrics WHERE job_id = :job_id AND name = s.name
                      AND step > :since AND step <= :until ORDER BY step LIMIT 1) AS lo
                CROSS JOIN LATERAL (
                    SELECT step FROM metrics WHERE job_id = :job_id AND name = s.name
                      AND step > :since AND step <= :until ORDER BY step DESC LIMIT 1) AS hi
            )
            SELECT m.name, (m.step - b.lo)::bigint * :max_points / (b.hi - b.lo + 1) AS bucket,
                   max(m.step) AS step,
                   sum(m.value * coalesce(m.samples, 1)) / sum(coalesce(m.samples, 1)) AS value,
                   min(coalesce(m.value_min, m.value)) AS vmin, max(coalesce(m.value_max, m.value)) AS vmax,
                   sum(coalesce(m.samples, 1)) AS cnt
            FROM b JOIN metrics AS m
              ON m.job_id = :job_id AND m.name = b.name AND m.step > :since AND m.step <= :until
            GROUP BY m.name, bucket ORDER BY m.name, bucket
            """
        ),
        {
            "job_id": job_id,
            "since": since_step,
            "until": LAST_STEP if until_step is None else until_step,
            "names": list(names),
            "max_points": max_points,
        },
    )
    series: dict[str, list[MetricPoint]] = {name: [] for name in names}
    for name, _bucket, step, value, vmin, vmax, cnt in rows:
        series[name].append(
            MetricPoint(step=int(step), value=float(value), min=float(vmin), max=float(vmax), count=int(cnt))
        )
    return series


def list_artifacts(session: Session, *, job_id: uuid.UUID, limit: int, cursor: str | None) -> Page:
    """A job's artifacts by name, ``limit`` at a time; the cursor is the last name seen."""
    query = select(Artifact).where(Artifact.job_id == job_id)
    if cursor is not None:
        query = query.where(Artifact.name > _decode_name_cursor(cursor))
    rows = list(session.scalars(query.order_by(Artifact.name).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = base64.urlsafe_b64encode(rows[-1].name.encode()).decode() if more and rows else None
    return Page(items=rows, next_cursor=next_cursor)


def _decode_name_cursor(cursor: str) -> str:
    try:
        name = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not a cursor this API returned", field="cursor") from exc
    if control_character(name) is not None:
        raise InvalidInput("cursor is not a cursor this API returned", field="cursor")
    return name


def get_artifact(session: Session, *, job_id: uuid.UUID, name: str) -> Artifact:
    """One artifact by name."""
    artifact = session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))
    if artifact is None:
        raise NotFound(f"artifact {name!r} not found")
    return artifact


def has_artifact(session: Session, *, job_id: uuid.UUID, name: str) -> bool:
    """Whether the job has an artifact of that name."""
    found = session.scalar(select(Artifact.id).where(Artifact.job_id == job_id, Artifact.name == name).limit(1))
    return found is not None


# --- style models -------------------------------------------------------------------------
# A style model is the model artifact of a succeeded style.train job; its id is the job's id. Deleting
# it removes that artifact and its card (the job's history and previews stay).


@dataclass(frozen=True)
class StyleModel:
    """A trained style model: its training job and the model file's artifact row."""

    job: Job
    artifact: Artifact
    preview: str | None  # the name of its final preview artifact, if it has one


def _models_query(tenant_id: uuid.UUID) -> Select[Any]:
    has_model = select(Artifact.id).where(Artifact.job_id == Job.id, Artifact.name == MODEL_FILE).exists()
    return select(Job).where(
        Job.tenant_id == tenant_id,
        Job.type == MODEL_JOB_TYPE,
        Job.state == JobState.SUCCEEDED.value,
        Job.deleted_at.is_(None),
        has_model,
    )


def _with_artifacts(session: Session, jobs: Sequence[Job]) -> list[StyleModel]:
    if not jobs:
        return []
    rows = session.scalars(
        select(Artifact).where(
            Artifact.job_id.in_([j.id for j in jobs]), Artifact.name.in_([MODEL_FILE, MODEL_PREVIEW])
        )
    )
    by_job: dict[tuple[uuid.UUID, str], Artifact] = {(a.job_id, a.name): a for a in rows}
    return [
        StyleModel(
            job=j,
            artifact=by_job[(j.id, MODEL_FILE)],
            preview=MODEL_PREVIEW if (j.id, MODEL_PREVIEW) in by_job else None,
        )
        for j in jobs
        if (j.id, MODEL_FILE) in by_job
    ]


def list_models(session: Session, *, tenant_id: uuid.UUID, limit: int, cursor: str | None) -> Page:
    """The caller's style models (succeeded style.train jobs that still have their model), newest first."""
    page = _paginate(session, _models_query(tenant_id), Job, limit=limit, cursor=cursor)
    return Page(items=_with_artifacts(session, page.items), next_cursor=page.next_cursor)


def get_model(session: Session, *, tenant_id: uuid.UUID, model_id: uuid.UUID) -> StyleModel:
    """One of the caller's style models; NotFound for a deleted one, anyone else's, or a job that is no model."""
    job = session.scalar(_models_query(tenant_id).where(Job.id == model_id))
    found = _with_artifacts(session, [job] if job is not None else [])
    if not found:
        raise NotFound(f"model {model_id} not found")
    return found[0]


def delete_model(session: Session, *, tenant_id: uuid.UUID, model_id: uuid.UUID) -> list[str]:
    """Remove a model's file and card rows; returns their object keys, for the caller to delete once committed.

    Idempotent: a model of the caller's that was already deleted gives no keys; NotFound for anything else.
    """
    job = session.scalar(
        select(Job)
        .where(Job.id == model_id, Job.tenant_id == tenant_id, Job.type == MODEL_JOB_TYPE)
        .where(Job.state == JobState.SUCCEEDED.value, Job.deleted_at.is_(None))
        .with_for_update()
    )
    if job is None:
        raise NotFound(f"model {model_id} not found")
    removed = session.scalars(
        delete(Artifact)
        .where(Artifact.job_id == model_id, Artifact.name.in_([MODEL_FILE, MODEL_CARD]))
        .returning(Artifact.key)
    )
    return list(removed)


# --- uploads --------------------------------------------------------------------------


def create_upload(
    session: Session,
    *,
    upload_id: uuid.UUID,
    tenant_id: uuid.UUID,
    filename: str,
    manifest: list[dict[str, Any]],
    classes: list[str],
    kind: str = "images",
) -> Upload:
    """Record an upload whose files are already stored."""
    check_name(filename, field="files")  # the client's name for it: it must fit the column
    upload = Upload(
        id=upload_id,
        tenant_id=tenant_id,
        filename=filename,
        kind=kind,
        file_count=len(manifest),
        total_bytes=sum(int(f["bytes"]) for f in manifest),
        manifest=manifest,
        classes=classes,
    )
    session.add(upload)
    session.flush()
    session.refresh(upload)
    return upload


def get_upload(session: Session, *, tenant_id: uuid.UUID, upload_id: uuid.UUID) -> Upload:
    """The caller's upload; NotFound for anyone else's, or one being deleted."""
    upload = session.scalar(
        select(Upload).where(Upload.id == upload_id, Upload.tenant_id == tenant_id, Upload.deleted_at.is_(None))
    )
    if upload is None:
        raise NotFound(f"upload {upload_id} not found")
    return upload


def list_uploads(session: Session, *, tenant_id: uuid.UUID, limit: int, cursor: str | None) -> Page:
    """Newest first, cursor-paginated like jobs."""
    query = select(Upload).where(Upload.tenant_id == tenant_id, Upload.deleted_at.is_(None))
    return _paginate(session, query, Upload, limit=limit, cursor=cursor)


# --- jobs: runner side (fenced by attempt) ---------------------------------------------


# --- sweeps ---------------------------------------------------------------------------------------------------


def create_sweep(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    job_type: str,
    spec: dict[str, Any],
    objective_metric: str,
    objective_mode: str,
    max_parallel: int,
) -> Sweep:
    """Insert a sweep row (its trials are created with create_job(sweep_id=...) in the same transaction)."""
    sweep = Sweep(
        tenant_id=tenant_id,
        type=job_type,
        spec=spec,
        objective_metric=objective_metric,
        objective_mode=objective_mode,
        max_parallel=max_parallel,
    )
    session.add(sweep)
    session.flush()
    return sweep


def get_sweep(session: Session, *, tenant_id: uuid.UUID, sweep_id: uuid.UUID) -> Sweep:
    """The caller's sweep; another tenant's is a NotFound, like a missing one."""
    sweep = session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.tenant_id == tenant_id))
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def sweep_trials(session: Session, *, sweep_id: uuid.UUID) -> list[Job]:
    """A sweep's trials in the order they were made."""
    return list(
        session.scalars(
            select(Job).where(Job.sweep_id == sweep_id, Job.deleted_at.is_(None)).order_by(Job.created_at, Job.id)
        )
    )


def list_sweeps(session: Session, *, tenant_id: uuid.UUID, limit: int, cursor: str | None) -> Page:
    """Newest first, cursor-paginated like jobs."""
    return _paginate(session, select(Sweep).where(Sweep.tenant_id == tenant_id), Sweep, limit=limit, cursor=cursor)


def cancel_sweep(session: Session, *, tenant_id: uuid.UUID, sweep_id: uuid.UUID) -> Sweep:
    """Cancel every trial not yet ended: queued ones at once, running ones at their next step."""
    sweep = session.scalar(select(Sweep).where(Sweep.id == sweep_id, Sweep.tenant_id == tenant_id).with_for_update())
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    sweep.cancel_requested = True
    live = session.scalars(
        select(Job.id).where(Job.sweep_id == sweep_id, Job.state.in_(ACTIVE_STATES)).order_by(Job.created_at)
    ).all()
    for job_id in live:
        request_cancel(session, tenant_id=tenant_id, job_id=job_id)
    session.flush()
    return sweep
