"""Retention's statements (workers/retention.py): which ended jobs a tenant's settings have come due for, and the
in-place downsampling of one job's loss history. Each runs on a batch or on one job per transaction, so neither
the API nor the runners wait behind it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

_CHECKPOINTS_DUE = """
SELECT j.id, j.checkpoint_key FROM jobs j JOIN tenants t ON t.id = j.tenant_id
WHERE t.keep_checkpoints_days IS NOT NULL AND j.state NOT IN ('queued', 'running') AND j.deleted_at IS NULL
  AND j.checkpoint_key IS NOT NULL AND j.finished_at < now() - make_interval(days => t.keep_checkpoints_days)
ORDER BY j.finished_at LIMIT :limit
"""

_METRICS_DUE = """
SELECT j.id, t.metrics_points_kept AS points FROM jobs j JOIN tenants t ON t.id = j.tenant_id
WHERE t.keep_full_metrics_days IS NOT NULL AND j.state NOT IN ('queued', 'running') AND j.deleted_at IS NULL
  AND j.retained_at IS NULL AND j.finished_at < now() - make_interval(days => t.keep_full_metrics_days)
ORDER BY j.finished_at LIMIT :limit
"""

_JOBS_DUE = """
SELECT j.id FROM jobs j JOIN tenants t ON t.id = j.tenant_id
WHERE t.keep_jobs_days IS NOT NULL AND j.state NOT IN ('queued', 'running') AND j.deleted_at IS NULL
  AND j.finished_at < now() - make_interval(days => t.keep_jobs_days)
ORDER BY j.finished_at LIMIT :limit
"""

# Buckets exactly as the metrics API makes them (shared/db/queries/api.py metric_series) over the whole series,
# so an API read with max_points dividing the kept points finds the same buckets. The first bucket keeps the
# series' first step and the others their last, so the series keeps its ends and the API its bucket bounds.
_BUCKETS = """
WITH ends AS (
    SELECT name, min(step) AS lo, max(step) AS hi FROM metrics WHERE job_id = :job_id
    GROUP BY name HAVING count(*) > :points
)
SELECT m.name, (m.step - e.lo)::bigint * :points / (e.hi - e.lo + 1) AS bucket,
       CASE WHEN (m.step - e.lo)::bigint * :points / (e.hi - e.lo + 1) = 0 THEN min(m.step) ELSE max(m.step) END
         AS step,
       sum(m.value * coalesce(m.samples, 1)) / sum(coalesce(m.samples, 1)) AS value,
       min(coalesce(m.value_min, m.value)) AS vmin, max(coalesce(m.value_max, m.value)) AS vmax,
       sum(coalesce(m.samples, 1)) AS samples, max(m.attempt) AS attempt
FROM metrics m JOIN ends e ON e.name = m.name
WHERE m.job_id = :job_id
GROUP BY m.name, bucket
"""

_INSERT_BUCKETS = """
INSERT INTO metrics (job_id, name, step, value, value_min, value_max, samples, attempt)
SELECT :job_id, b.name, b.step, b.value, b.vmin, b.vmax, b.samples, b.attempt
FROM unnest(CAST(:names AS text[]), CAST(:steps AS int[]), CAST(:values AS float8[]), CAST(:vmins AS float8[]),
            CAST(:vmaxs AS float8[]), CAST(:samples AS int[]), CAST(:attempts AS int[]))
     AS b(name, step, value, vmin, vmax, samples, attempt)
"""


def checkpoints_due(session: Session, *, limit: int) -> list[tuple[uuid.UUID, str]]:
    """(job, checkpoint key) of ended jobs whose tenant keeps checkpoints fewer days than they have ended."""
    return [(r.id, r.checkpoint_key) for r in session.execute(text(_CHECKPOINTS_DUE), {"limit": limit})]


def drop_checkpoint(session: Session, *, job_id: uuid.UUID, key: str) -> bool:
    """Clear an ended job's checkpoint pointer (its object is deleted after); False if it moved meanwhile."""
    row = session.execute(
        text(
            "UPDATE jobs SET checkpoint_key = NULL, checkpoint_step = NULL, checkpoint_bytes = 0, updated_at = now() "
            "WHERE id = :job_id AND checkpoint_key = :key AND state NOT IN ('queued', 'running') RETURNING id"
        ),
        {"job_id": job_id, "key": key},
    ).first()
    return row is not None


def metrics_due(session: Session, *, limit: int) -> list[tuple[uuid.UUID, int]]:
    """(job, points to keep) of ended jobs whose full-resolution metrics are past their tenant's days."""
    return [(r.id, int(r.points)) for r in session.execute(text(_METRICS_DUE), {"limit": limit})]


@dataclass(frozen=True)
class Downsampled:
    """What downsampling one job did."""

    series: int  # series that had more than the points kept
    rows_before: int
    rows_after: int


def downsample_job(session: Session, *, job_id: uuid.UUID, points: int) -> Downsampled:
    """Replace each of the job's series longer than ``points`` by at most ``points`` bucket rows (mean, min, max,
    count), then mark the job retained. Call with the job ended; one transaction."""
    buckets = session.execute(text(_BUCKETS), {"job_id": job_id, "points": points}).all()
    names = sorted({b.name for b in buckets})
    before = 0
    if names:
        before = int(
            session.scalar(
                text("SELECT count(*) FROM metrics WHERE job_id = :job_id AND name = ANY(CAST(:names AS text[]))"),
                {"job_id": job_id, "names": names},
            )
            or 0
        )
        session.execute(
            text("DELETE FROM metrics WHERE job_id = :job_id AND name = ANY(CAST(:names AS text[]))"),
            {"job_id": job_id, "names": names},
        )
        session.execute(
            text(_INSERT_BUCKETS),
            {
                "job_id": job_id,
                "names": [b.name for b in buckets],
                "steps": [int(b.step) for b in buckets],
                "values": [float(b.value) for b in buckets],
                "vmins": [float(b.vmin) for b in buckets],
                "vmaxs": [float(b.vmax) for b in buckets],
                "samples": [int(b.samples) for b in buckets],
                "attempts": [int(b.attempt) for b in buckets],
            },
        )
    session.execute(text("UPDATE jobs SET retained_at = now() WHERE id = :job_id"), {"job_id": job_id})
    return Downsampled(series=len(names), rows_before=before, rows_after=len(buckets))


def jobs_due(session: Session, *, limit: int) -> list[uuid.UUID]:
    """Ended jobs older than their tenant keeps jobs: to be deleted whole."""
    return [r.id for r in session.execute(text(_JOBS_DUE), {"limit": limit})]


def mark_expired(session: Session, *, job_ids: list[uuid.UUID]) -> int:
    """Mark ended jobs deleted as their tenant's keep_jobs_days says (the purge removes them); how many."""
    rows = session.execute(
        text(
            "UPDATE jobs SET deleted_at = now() WHERE id = ANY(CAST(:ids AS uuid[])) AND deleted_at IS NULL "
            "AND state NOT IN ('queued', 'running') RETURNING id"
        ),
        {"ids": job_ids},
    ).all()
    return len(rows)
