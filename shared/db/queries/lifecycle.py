"""Deletion: DELETE /v1/jobs/{id} marks the job (gone for the API at once, cancelled if it was live); the purge
(workers/lifecycle.py) then removes its objects, its metric rows in batches, and its row with everything that
cascades from it. Marking is one short transaction; the purge is idempotent, so a crash half way is finished by
the next pass (the reconciler runs one every period)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.db.models import Artifact, Job, Tenant, Upload
from shared.db.queries.events import append_events, terminal_events
from shared.errors import NotFound
from shared.jobs.states import JobState

METRIC_DELETE_BATCH = 20_000  # rows a purge deletes per transaction, so no long lock holds up the API


@dataclass(frozen=True)
class Marked:
    """What DELETE did: the job, and whether it was running (it stops at its next step, then is purged)."""

    job_id: uuid.UUID
    was_running: bool
    already: bool  # marked before (a repeat DELETE while the purge is under way)


def mark_job_deleted(session: Session, *, tenant_id: uuid.UUID, job_id: uuid.UUID) -> Marked:
    """Mark the caller's job deleted: a queued one is cancelled now, a running one asked to stop.

    NotFound for another tenant's job, or one already purged. A repeat before the purge is a no-op.
    """
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id).with_for_update())
    if job is None:
        raise NotFound(f"job {job_id} not found")
    if job.deleted_at is not None:
        return Marked(job_id=job.id, was_running=job.state == JobState.RUNNING, already=True)
    if job.state == JobState.QUEUED:
        job.state = JobState.CANCELLED.value
        job.finished_at = func.now()
        session.flush()
        append_events(session, job_id=job_id, items=terminal_events(JobState.CANCELLED.value, attempt=job.attempt))
    job.cancel_requested = job.cancel_requested or job.state == JobState.RUNNING
    job.deleted_at = func.now()
    session.flush()
    return Marked(job_id=job.id, was_running=job.state == JobState.RUNNING, already=False)


def lock_upload(session: Session, *, tenant_id: uuid.UUID, upload_id: uuid.UUID) -> Upload:
    """The caller's upload (marked or not), locked, with the tenant row locked as submit locks it: a submit that
    could name the upload waits for this transaction, and this one sees every job committed before it."""
    session.scalar(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
    upload = session.scalar(
        select(Upload).where(Upload.id == upload_id, Upload.tenant_id == tenant_id).with_for_update()
    )
    if upload is None:
        raise NotFound(f"upload {upload_id} not found")
    return upload


def active_jobs(session: Session, *, tenant_id: uuid.UUID) -> list[tuple[uuid.UUID, str, dict[str, object]]]:
    """(id, type, params) of the tenant's queued and running jobs not being deleted, oldest first (bounded by its
    active-jobs quota)."""
    rows = session.execute(
        select(Job.id, Job.type, Job.params)
        .where(Job.tenant_id == tenant_id, Job.state.in_((JobState.QUEUED.value, JobState.RUNNING.value)))
        .where(Job.deleted_at.is_(None))
        .order_by(Job.created_at)
    ).all()
    return [(r.id, r.type, r.params) for r in rows]


def mark_upload_deleted(session: Session, *, upload: Upload) -> bool:
    """Mark a locked upload deleted; False if it already was."""
    if upload.deleted_at is not None:
        return False
    upload.deleted_at = func.now()
    session.flush()
    return True


def uploads_to_purge(session: Session, *, limit: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(tenant, upload) of uploads marked deleted, oldest mark first."""
    rows = session.execute(
        select(Upload.tenant_id, Upload.id)
        .where(Upload.deleted_at.is_not(None))
        .order_by(Upload.deleted_at)
        .limit(limit)
    ).all()
    return [(r.tenant_id, r.id) for r in rows]


def delete_upload_row(session: Session, *, upload_id: uuid.UUID) -> bool:
    """Delete a marked upload's row; False if it is not one."""
    removed = session.execute(
        text("DELETE FROM uploads WHERE id = :upload_id AND deleted_at IS NOT NULL RETURNING id"),
        {"upload_id": upload_id},
    ).first()
    return removed is not None


def jobs_to_purge(session: Session, *, limit: int) -> list[uuid.UUID]:
    """Jobs marked deleted that no runner holds any more, oldest mark first."""
    rows = session.scalars(
        select(Job.id)
        .where(Job.deleted_at.is_not(None), Job.state != JobState.RUNNING.value)
        .order_by(Job.deleted_at)
        .limit(limit)
    )
    return list(rows)


def is_deleted(session: Session, *, job_id: uuid.UUID) -> bool:
    """Whether the job is marked deleted (or already gone)."""
    row = session.execute(select(Job.deleted_at).where(Job.id == job_id)).first()
    return row is None or row.deleted_at is not None


def delete_metric_batch(session: Session, *, job_id: uuid.UUID) -> int:
    """Delete up to METRIC_DELETE_BATCH of a marked job's metric rows; how many went."""
    result = session.execute(
        text(
            """
            DELETE FROM metrics WHERE (job_id, name, step) IN (
                SELECT m.job_id, m.name, m.step FROM metrics m JOIN jobs j ON j.id = m.job_id
                WHERE m.job_id = :job_id AND j.deleted_at IS NOT NULL LIMIT :batch)
            """
        ),
        {"job_id": job_id, "batch": METRIC_DELETE_BATCH},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def delete_job_row(session: Session, *, job_id: uuid.UUID) -> bool:
    """Delete a marked job's row (artifacts, events and webhook deliveries cascade); False if it is not one."""
    removed = session.execute(
        text("DELETE FROM jobs WHERE id = :job_id AND deleted_at IS NOT NULL AND state <> 'running' RETURNING id"),
        {"job_id": job_id},
    ).first()
    return removed is not None


# --- the orphan collector's reads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveKeys:
    """For the jobs and uploads a batch of objects names: which exist, and which object keys their rows point to."""

    jobs: set[uuid.UUID]  # job rows that exist (marked deleted or not: the purge owns those)
    uploads: set[uuid.UUID]  # upload rows that exist and are not marked deleted
    keys: set[str]  # every key a row points to: checkpoint pointers, artifacts, upload manifests


def live_keys(session: Session, *, job_ids: set[uuid.UUID], upload_ids: set[uuid.UUID]) -> LiveKeys:
    """What the rows say about these jobs and uploads (three indexed reads)."""
    jobs: set[uuid.UUID] = set()
    keys: set[str] = set()
    if job_ids:
        for row in session.execute(select(Job.id, Job.checkpoint_key).where(Job.id.in_(job_ids))):
            jobs.add(row.id)
            if row.checkpoint_key:
                keys.add(row.checkpoint_key)
        keys.update(session.scalars(select(Artifact.key).where(Artifact.job_id.in_(job_ids))))
    uploads: set[uuid.UUID] = set()
    if upload_ids:
        rows = session.execute(
            select(Upload.id, Upload.manifest).where(Upload.id.in_(upload_ids), Upload.deleted_at.is_(None))
        )
        for row in rows:
            uploads.add(row.id)
            keys.update(str(f["key"]) for f in row.manifest if isinstance(f, dict) and f.get("key"))
    return LiveKeys(jobs=jobs, uploads=uploads, keys=keys)
