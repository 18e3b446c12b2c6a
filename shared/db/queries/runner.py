"""The runner's statements, and nothing else: the claim, and every write fenced by the job's
``attempt`` (the lease's fencing token). A write that matches no row means the lease is gone."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, literal, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from shared.db.models import Artifact, Job
from shared.db.queries import scheduling
from shared.db.queries.events import append_events, state_event, terminal_events
from shared.jobs.states import TERMINAL_STATES, JobState


@dataclass(frozen=True)
class Claim:
    """What a runner learns when its claim succeeds."""

    job_id: uuid.UUID
    tenant_id: uuid.UUID
    attempt: int
    job_type: str
    params: dict[str, Any]
    checkpoint_key: str | None
    checkpoint_step: int | None
    # Whether the job the message named could itself have been claimed (it may have waited its fair turn)
    named_claimable: bool = True


def claim_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    owner: str,
    lease_s: float,
    now: datetime | None = None,
    expired_only: bool = False,
) -> Claim | None:
    """Atomically take the lease of a queued job (or one whose lease expired).

    Increments ``attempt``, the fencing token. None if the job is running elsewhere,
    finished, cancelled, out of attempts (handed-back attempts don't count), or unknown: the
    caller must then not train. ``now``: the database's clock unless a simulation drives it.
    ``expired_only``: take it only over a lost worker (running, lease expired), never from the queue.
    """
    row = session.execute(
        text(
            """
            UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = :owner,
                   lease_expires_at = clock.now + make_interval(secs => :lease),
                   started_at = coalesce(jobs.started_at, clock.now), claimed_at = clock.now,
                   updated_at = clock.now, resumed_from_step = checkpoint_step
            FROM (SELECT started_at IS NULL AS first FROM jobs WHERE id = :job_id) AS before,
                 (SELECT coalesce(CAST(:now AS timestamptz), now()) AS now) AS clock
            WHERE id = :job_id AND attempt - handbacks < max_attempts AND NOT cancel_requested
              AND ((state = 'queued' AND NOT :expired_only) OR (state = 'running' AND lease_expires_at < clock.now))
            RETURNING tenant_id, attempt, type, params, checkpoint_key, checkpoint_step, before.first
            """
        ),
        {"job_id": job_id, "owner": owner, "lease": lease_s, "now": now, "expired_only": expired_only},
    ).first()
    if row is None:
        return None
    append_events(session, job_id=job_id, items=[state_event("running", attempt=row.attempt, first=row.first)])
    return Claim(
        job_id=job_id,
        tenant_id=row.tenant_id,
        attempt=row.attempt,
        job_type=row.type,
        params=row.params,
        checkpoint_key=row.checkpoint_key,
        checkpoint_step=row.checkpoint_step,
    )


def claim_next(
    session: Session,
    *,
    job_id: uuid.UUID,
    owner: str,
    lease_s: float,
    window_s: float,
    now: datetime | None = None,
    capacity: int | None = None,
) -> Claim | None:
    """A message is a wake-up for its job's queue: claim the fairest job there that fits ``capacity`` bytes of
    free device memory (shared/db/queries/scheduling.py; None: no memory check).

    When no queued job may start, the message's own job is tried as before, but only if it is running with
    an expired lease (a lost worker's job is taken over, if it fits): a queued job the pick passed over is held
    back by a limit (its tenant's running limit, its sweep's max_parallel) and must not start. None: nothing to
    run (a duplicate message, every tenant with queued work at its running limit, or nothing that fits).
    """
    named = scheduling.named_job(session, job_id, now=now)
    if named is None:
        return None
    picked = scheduling.pick_job(session, queue=named.queue, window_s=window_s, now=now, capacity=capacity)
    if picked is None and not named.fits(capacity):
        return None
    target = picked if picked is not None else job_id
    claim = claim_job(session, job_id=target, owner=owner, lease_s=lease_s, now=now, expired_only=picked is None)
    return replace(claim, named_claimable=named.claimable) if claim is not None else None


def checkpoint_pointer(session: Session, *, job_id: uuid.UUID) -> tuple[str | None, int]:
    """The job's checkpoint key and its size (None, 0 before the first, or for a job that is gone)."""
    row = session.execute(select(Job.checkpoint_key, Job.checkpoint_bytes).where(Job.id == job_id)).first()
    return (row.checkpoint_key, int(row.checkpoint_bytes)) if row is not None else (None, 0)


def holds(session: Session, *, job_id: uuid.UUID, attempt: int) -> bool:
    """Whether this attempt still holds the job (running under its attempt): checked before each upload."""
    row = session.execute(
        select(Job.id).where(Job.id == job_id, Job.attempt == attempt, Job.state == JobState.RUNNING.value)
    ).first()
    return row is not None


@dataclass(frozen=True)
class SyncResult:
    """What the runner learns from a heartbeat."""

    alive: bool
    cancel_requested: bool


def _fenced_update(session: Session, job_id: uuid.UUID, attempt: int, **values: Any) -> Any:
    """UPDATE the job only while this attempt holds it; returns the row or None."""
    return session.execute(
        update(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.state == JobState.RUNNING.value)
        .values(updated_at=func.now(), **values)
        .returning(Job.cancel_requested)
    ).first()


def sync_runner(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    lease_s: float,
    metrics: Sequence[tuple[str, int, float]],
    progress: tuple[int, int] | None,
    steps_per_s: float | None,
    latest: dict[str, float] | None,
    events: Sequence[tuple[str, dict[str, Any]]] = (),
) -> SyncResult:
    """Heartbeat: extend the lease, record progress, upsert buffered metrics, append ``events``; all fenced.

    The job row is locked first, so a concurrent claim waits for this transaction, and
    if the lease is gone nothing at all is written (the caller must roll back).
    """
    values: dict[str, Any] = {"lease_expires_at": func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_s)}
    if progress is not None:
        values["progress_step"], values["progress_total"] = progress
    if steps_per_s is not None:
        values["steps_per_s"] = steps_per_s
    if latest:
        values["latest_metrics"] = Job.latest_metrics.op("||")(func.cast(literal(latest, JSONB), JSONB))
    row = _fenced_update(session, job_id, attempt, **values)
    if row is None:
        return SyncResult(alive=False, cancel_requested=False)
    upsert_metrics(session, job_id=job_id, attempt=attempt, metrics=metrics)
    append_events(session, job_id=job_id, items=events)
    return SyncResult(alive=True, cancel_requested=bool(row.cancel_requested))


# One statement for a whole flush: unnest() of three arrays, so that Postgres and the driver each handle
# three parameters whatever the batch's size (a multi-row VALUES of 2,700 rows cost 0.4 s of the
# heartbeat thread's CPU, and that thread shares the GIL with the training loop).
UPSERT_METRICS = text(
    """
    INSERT INTO metrics (job_id, name, step, value, attempt)
    SELECT :job_id, m.name, m.step, m.value, :attempt
    FROM unnest(CAST(:names AS text[]), CAST(:steps AS int[]), CAST(:values AS float8[])) AS m(name, step, value)
    ON CONFLICT (job_id, name, step)
    DO UPDATE SET value = excluded.value, attempt = excluded.attempt, recorded_at = now()
    """
)


def upsert_metrics(
    session: Session, *, job_id: uuid.UUID, attempt: int, metrics: Sequence[tuple[str, int, float]]
) -> None:
    """Insert or overwrite (job, name, step) rows. Call only after a fenced job update."""
    if not metrics:
        return
    names, steps, values = zip(*metrics, strict=True)
    session.execute(
        UPSERT_METRICS,
        {"job_id": job_id, "attempt": attempt, "names": list(names), "steps": list(steps), "values": list(values)},
    )


def flush_metrics(
    session: Session, *, job_id: uuid.UUID, attempt: int, metrics: Sequence[tuple[str, int, float]]
) -> bool:
    """Upsert buffered metrics while this attempt holds the job; False if fenced out."""
    if _fenced_update(session, job_id, attempt) is None:
        return False
    upsert_metrics(session, job_id=job_id, attempt=attempt, metrics=metrics)
    return True


def commit_checkpoint(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    key: str,
    step: int,
    metrics: Sequence[tuple[str, int, float]],
    size: int = 0,
) -> bool:
    """Point the job at an uploaded checkpoint of ``size`` bytes, with the metrics up to it; False if fenced out."""
    row = _fenced_update(session, job_id, attempt, checkpoint_key=key, checkpoint_step=step, checkpoint_bytes=size)
    if row is None:
        return False
    upsert_metrics(session, job_id=job_id, attempt=attempt, metrics=metrics)
    return True


def record_artifact(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    name: str,
    kind: str,
    key: str,
    size: int,
    sha256: str,
    content_type: str,
    step: int | None = None,
) -> bool:
    """Upsert an artifact row (the object is already stored) and its ``artifact`` event; False if fenced out."""
    if _fenced_update(session, job_id, attempt) is None:
        return False
    values = {
        "job_id": job_id,
        "name": name,
        "kind": kind,
        "key": key,
        "size": size,
        "sha256": sha256,
        "content_type": content_type,
        "attempt": attempt,
    }
    stmt = insert(Artifact).values(id=uuid.uuid4(), **values)
    stmt = stmt.on_conflict_do_update(
        constraint="uq_artifacts_job_name",
        set_={k: stmt.excluded[k] for k in ("kind", "key", "size", "sha256", "content_type", "attempt")},
    )
    session.execute(stmt)
    event = {"name": name, "kind": kind, "step": step, "size": size, "content_type": content_type}
    append_events(session, job_id=job_id, items=[("artifact", event)])
    return True


def add_warning(session: Session, *, job_id: uuid.UUID, attempt: int, message: str) -> bool:
    """Append a warning once; False if fenced out."""
    job = session.scalar(
        select(Job)
        .where(Job.id == job_id, Job.attempt == attempt, Job.state == JobState.RUNNING.value)
        .with_for_update()
    )
    if job is None:
        return False
    if message not in job.warnings:
        job.warnings = [*job.warnings, message]
        append_events(session, job_id=job_id, items=[("warning", {"message": message})])
    return True


def finish_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    state: JobState,
    error_code: str | None = None,
    error_message: str | None = None,
    early_stop: dict[str, Any] | None = None,
) -> bool:
    """Move a running job to a terminal state (or back to queued); False if fenced out.

    ``early_stop``: why a sweep's rule stopped the trial (state stopped_early).
    """
    terminal = state in TERMINAL_STATES
    values: dict[str, Any] = {
        "state": state.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "error_code": error_code,
        "error_message": error_message,
    }
    if early_stop is not None:
        values["early_stop"] = early_stop
    if terminal:
        values["finished_at"] = func.now()
    if state == JobState.SUCCEEDED:
        values["progress_step"] = Job.progress_total
    else:
        values["enqueued_at"] = None if not terminal else Job.enqueued_at
    if state == JobState.QUEUED:  # handed back on shutdown: this attempt does not count
        values["handbacks"] = Job.handbacks + 1
    if _fenced_update(session, job_id, attempt, **values) is None:
        return False
    if terminal:
        events = terminal_events(state.value, attempt=attempt, error_code=error_code, error_message=error_message)
    else:
        events = [state_event(state.value, attempt=attempt, error_code=error_code, error_message=error_message)]
    append_events(session, job_id=job_id, items=events)
    return True


# --- reconciler ---------------------------------------------------------------------
