"""What a tenant stores and uses: bytes of artifacts, checkpoints and uploads, metric rows, worker time this month;
and the storage quota that the API (new jobs, uploads) and the runner (checkpoints, artifacts) enforce.

Stored bytes come from the rows: ``artifacts.size``, ``jobs.checkpoint_bytes`` (the one checkpoint a job keeps:
the runner deletes the one it replaces), ``uploads.total_bytes``. Jobs and uploads marked deleted no longer count.
Decoded copies of uploads (``prepared/``) are the service's cache, not the tenant's data, and are not counted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def describe_bytes(count: float) -> str:
    """``count`` bytes for people: ``512 B``, ``12.3 KiB``, ``1.5 GiB``."""
    for unit in UNITS[:-1]:
        if abs(count) < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} {UNITS[-1]}"


_STORED = """
SELECT
  (SELECT coalesce(sum(a.size), 0) FROM artifacts a JOIN jobs j ON j.id = a.job_id
    WHERE j.tenant_id = :t AND j.deleted_at IS NULL) AS artifacts,
  (SELECT coalesce(sum(checkpoint_bytes), 0) FROM jobs WHERE tenant_id = :t AND deleted_at IS NULL) AS checkpoints,
  (SELECT coalesce(sum(total_bytes), 0) FROM uploads WHERE tenant_id = :t AND deleted_at IS NULL) AS uploads,
  (SELECT max_storage_bytes FROM tenants WHERE id = :t) AS quota
"""

_ACTIVITY = """
SELECT
  (SELECT count(*) FROM metrics m JOIN jobs j ON j.id = m.job_id
    WHERE j.tenant_id = :t AND j.deleted_at IS NULL) AS metric_rows,
  (SELECT coalesce(sum(extract(epoch FROM coalesce(finished_at, now()) - greatest(started_at, :since))), 0)
     FROM jobs WHERE tenant_id = :t AND queue = 'gpu' AND started_at IS NOT NULL
      AND coalesce(finished_at, now()) > :since) AS gpu_seconds,
  (SELECT count(*) FROM jobs WHERE tenant_id = :t AND deleted_at IS NULL) AS jobs
"""


@dataclass(frozen=True)
class Stored:
    """A tenant's stored bytes by kind, and its quota (None: none)."""

    artifacts: int
    checkpoints: int
    uploads: int
    quota: int | None

    @property
    def total(self) -> int:
        """Every stored byte that counts against the quota."""
        return self.artifacts + self.checkpoints + self.uploads

    def over(self, adding: int = 0) -> bool:
        """Whether storing ``adding`` more bytes would pass the quota."""
        return self.quota is not None and self.total + adding > self.quota

    def advice(self, adding: int = 0) -> str:
        """The quota message: what is stored, and what to delete."""
        what = f"storing {describe_bytes(adding)} more would pass" if adding else "it is at or over"
        return (
            f"the tenant stores {describe_bytes(self.total)} (artifacts {describe_bytes(self.artifacts)}, "
            f"checkpoints {describe_bytes(self.checkpoints)}, uploads {describe_bytes(self.uploads)}); {what} its "
            f"storage quota of {describe_bytes(self.quota or 0)}: delete jobs (DELETE /v1/jobs/{{id}}, "
            "`atelier rm`) or uploads (DELETE /v1/uploads/{id}) it no longer needs, or ask for a larger quota"
        )


def storage_quota(session: Session, *, tenant_id: uuid.UUID) -> int | None:
    """The tenant's storage quota in bytes (None: none): one primary-key read, before any aggregate."""
    quota = session.scalar(text("SELECT max_storage_bytes FROM tenants WHERE id = :t"), {"t": tenant_id})
    return None if quota is None else int(quota)


def stored(session: Session, *, tenant_id: uuid.UUID) -> Stored:
    """The tenant's stored bytes and quota (three indexed aggregates)."""
    row = session.execute(text(_STORED), {"t": tenant_id}).one()
    quota = None if row.quota is None else int(row.quota)
    return Stored(int(row.artifacts), int(row.checkpoints), int(row.uploads), quota)


@dataclass(frozen=True)
class Activity:
    """What a tenant's jobs did: metric rows kept, and GPU-queue worker time since ``since``."""

    metric_rows: int
    gpu_seconds: float
    jobs: int


def activity(session: Session, *, tenant_id: uuid.UUID, since: datetime) -> Activity:
    """Metric rows of its jobs, and the worker time of its gpu-queue jobs since ``since`` (from each job's
    first start to its end or now: a job that waited between attempts is charged that wait too)."""
    row = session.execute(text(_ACTIVITY), {"t": tenant_id, "since": since}).one()
    return Activity(int(row.metric_rows), float(row.gpu_seconds), int(row.jobs))
