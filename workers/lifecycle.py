"""The purge of deleted jobs and uploads (DELETE /v1/jobs/{id} and /v1/uploads/{id} mark them:
shared/db/queries/lifecycle.py). An upload's objects go, then its row.

For each marked job no runner holds: every object under its prefix goes first, then its metric rows a batch per
transaction, then its row (artifacts, events and webhook deliveries cascade). Each step is idempotent and the
row goes last, so a purge that dies half way (a killed worker, the store away) is finished by the next pass;
the API sends one after each DELETE, a runner after a deleted job's attempt ends, the reconciler every period.
A runner checks that it still holds its job before each upload (workers/runtime.py), so a purged job's worker
does not put its objects back.
"""

from __future__ import annotations

import logging
import uuid

from shared.db import queries
from shared.db.queries.lifecycle import METRIC_DELETE_BATCH
from shared.db.session import transaction
from shared.storage import job_prefix, retry_storage, upload_prefix
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)

PURGE_BATCH = 50  # jobs one pass purges; the rest wait for the next


def purge_job(ctx: WorkerContext, job_id: uuid.UUID) -> tuple[int, int]:
    """Purge one marked job: (objects removed, metric rows removed). Its row goes last."""
    objects = retry_storage(
        lambda: ctx.store.delete_prefix(job_prefix(job_id)),
        deadline_s=ctx.settings.storage_retry_deadline_s,
        what=f"deleting the objects of job {job_id}",
    )
    rows = 0
    while True:
        with transaction(ctx.sessions) as session:
            removed = queries.delete_metric_batch(session, job_id=job_id)
        rows += removed
        if removed < METRIC_DELETE_BATCH:
            break
    with transaction(ctx.sessions) as session:
        gone = queries.delete_job_row(session, job_id=job_id)
    log.info("purged job %s: %d objects, %d metric rows%s", job_id, objects, rows, "" if gone else " (row kept)")
    return objects, rows


def purge_upload(ctx: WorkerContext, tenant_id: uuid.UUID, upload_id: uuid.UUID) -> int:
    """Purge one marked upload: its objects, then its row; how many objects went."""
    objects = retry_storage(
        lambda: ctx.store.delete_prefix(upload_prefix(tenant_id, upload_id)),
        deadline_s=ctx.settings.storage_retry_deadline_s,
        what=f"deleting the objects of upload {upload_id}",
    )
    with transaction(ctx.sessions) as session:
        queries.delete_upload_row(session, upload_id=upload_id)
    log.info("purged upload %s: %d objects", upload_id, objects)
    return objects


def purge_deleted(ctx: WorkerContext, *, limit: int = PURGE_BATCH) -> int:
    """Purge the marked jobs no runner holds, and the marked uploads, oldest first; how many were purged."""
    with transaction(ctx.sessions) as session:
        jobs = queries.jobs_to_purge(session, limit=limit)
        uploads = queries.uploads_to_purge(session, limit=limit)
    done = 0
    for job_id in jobs:
        try:
            purge_job(ctx, job_id)
            done += 1
        except Exception as exc:  # the store or the database away: the next pass tries again
            log.warning("could not purge job %s yet: %s", job_id, exc)
    for tenant_id, upload_id in uploads:
        try:
            purge_upload(ctx, tenant_id, upload_id)
            done += 1
        except Exception as exc:
            log.warning("could not purge upload %s yet: %s", upload_id, exc)
    return done
