"""Retention, a beat task on the ``cpu`` queue: each tenant's settings applied to its ended jobs, in batches.

- ``keep_checkpoints_days``: the checkpoint pointer is cleared, then its object deleted (outputs, the final
  generator and samples stay);
- ``keep_full_metrics_days``: each series longer than ``metrics_points_kept`` is replaced in place by that many
  bucket rows carrying each bucket's mean, min, max and count (shared/db/queries/retention.py), one job per
  transaction;
- ``keep_jobs_days``: the job is marked deleted, and the purge (workers/lifecycle.py) removes it whole.
Every step is idempotent and narrow, so a pass that dies is finished by the next, and neither the API nor the
runners wait behind it.
"""

from __future__ import annotations

import logging

from shared.db import queries
from shared.db.session import transaction
from workers.lifecycle import purge_deleted
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)

RETENTION_BATCH = 100  # jobs per kind per pass


def apply_retention(ctx: WorkerContext, *, batch: int = RETENTION_BATCH) -> dict[str, int]:
    """One pass over what is due; counts of what it did."""
    done = {"checkpoints_dropped": 0, "jobs_downsampled": 0, "metric_rows_removed": 0, "jobs_expired": 0}
    with transaction(ctx.sessions) as session:
        checkpoints = queries.checkpoints_due(session, limit=batch)
    for job_id, key in checkpoints:
        with transaction(ctx.sessions) as session:
            cleared = queries.drop_checkpoint(session, job_id=job_id, key=key)
        if cleared:  # the row no longer points to it; if this delete fails, the orphan collector takes it
            try:
                ctx.store.delete(key)
            except Exception as exc:
                log.warning("retention: could not delete checkpoint %s now: %s", key, exc)
            done["checkpoints_dropped"] += 1
    with transaction(ctx.sessions) as session:
        metrics = queries.metrics_due(session, limit=batch)
    for job_id, points in metrics:
        with transaction(ctx.sessions) as session:
            result = queries.downsample_job(session, job_id=job_id, points=points)
        done["jobs_downsampled"] += 1
        done["metric_rows_removed"] += result.rows_before - result.rows_after
    with transaction(ctx.sessions) as session:
        expired = queries.mark_expired(session, job_ids=queries.jobs_due(session, limit=batch))
    done["jobs_expired"] = expired
    if expired:
        purge_deleted(ctx)
    if any(done.values()):
        log.info("retention: %s", done)
    return done
