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
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from shared.db import queries
from shared.db.queries.lifecycle import METRIC_DELETE_BATCH
from shared.db.session import transaction
from shared.storage import StoredObject, job_prefix, prepared_prefix, retry_storage, upload_prefix
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
    """Purge one marked upload: its files and the decoded copies workers keep of it, then its row; how many
    objects went."""
    objects = 0
    for prefix in (upload_prefix(tenant_id, upload_id), prepared_prefix(tenant_id, upload_id)):
        objects += retry_storage(
            lambda prefix=prefix: ctx.store.delete_prefix(prefix),  # type: ignore[misc]
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


# --- the orphan collector ----------------------------------------------------------------------------------------

_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
JOB_OBJECT = re.compile(rf"^jobs/(?P<job>{_ID})/(?P<section>checkpoints|samples|outputs)/.+$")
UPLOAD_OBJECT = re.compile(rf"^uploads/{_ID}/(?P<upload>{_ID})/.+$")
PREPARED_OBJECT = re.compile(rf"^prepared/{_ID}/(?P<upload>{_ID})/.+$")
SCANNED_PREFIXES = ("jobs/", "uploads/", "prepared/")  # assets/ (shared caches) is never scanned
JUDGE_BATCH = 1000  # objects judged per database round trip


@dataclass
class Collected:
    """What one collection saw and removed."""

    scanned: int = 0
    young: int = 0  # newer than the grace: not judged (an upload or checkpoint may be in flight)
    live: int = 0
    unknown: int = 0  # under a scanned prefix but of no shape the code writes: never touched
    removed: Counter[str] = field(default_factory=Counter)  # by why
    removed_bytes: int = 0
    removed_keys: list[str] = field(default_factory=list)

    def report(self) -> dict[str, int]:
        """Counts for the log and the task's result."""
        return {
            "scanned": self.scanned,
            "young": self.young,
            "live": self.live,
            "unknown": self.unknown,
            "removed": sum(self.removed.values()),
            "removed_bytes": self.removed_bytes,
            **{f"removed_{why}": n for why, n in sorted(self.removed.items())},
        }


def orphan_reason(key: str, live: queries.LiveKeys) -> str | None:
    """Why the object at ``key`` is an orphan (None: a row points to it, or it is not ours to judge)."""
    if key in live.keys:
        return None
    if match := JOB_OBJECT.match(key):
        if uuid.UUID(match["job"]) not in live.jobs:
            return "job_gone"  # purged, or never committed (a zombie's upload after the purge)
        return "superseded_checkpoint" if match["section"] == "checkpoints" else "unrecorded_artifact"
    if match := UPLOAD_OBJECT.match(key):
        return "upload_gone" if uuid.UUID(match["upload"]) not in live.uploads else "unlisted_upload_file"
    if match := PREPARED_OBJECT.match(key):
        return "prepared_of_gone_upload" if uuid.UUID(match["upload"]) not in live.uploads else None
    return None


def _owners(batch: list[StoredObject]) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    jobs: set[uuid.UUID] = set()
    uploads: set[uuid.UUID] = set()
    for obj in batch:
        if match := JOB_OBJECT.match(obj.key):
            jobs.add(uuid.UUID(match["job"]))
        elif match := UPLOAD_OBJECT.match(obj.key) or PREPARED_OBJECT.match(obj.key):
            uploads.add(uuid.UUID(match["upload"]))
    return jobs, uploads


def collect_orphans(ctx: WorkerContext, *, grace_s: float, now: datetime | None = None) -> Collected:
    """Delete every object under jobs/, uploads/ and prepared/ that no row points to and that is older than
    ``grace_s``; report what it saw and removed.

    Live: a job's checkpoint pointer and recorded artifacts, an upload's listed files, and the decoded copies of an
    upload that exists. Orphans: everything of a job or upload with no row; checkpoints the pointer moved past (a
    lost attempt's ``a1-`` keys among them); artifacts never recorded (an attempt fenced out between upload and
    record); files an upload does not list; decoded copies of a deleted upload. A key of any other shape is left
    alone. A job marked deleted still has its row: its purge removes it whole.
    """
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=grace_s)
    seen = Collected()
    batch: list[StoredObject] = []

    def judge() -> None:
        jobs, uploads = _owners(batch)
        with transaction(ctx.sessions) as session:
            live = queries.live_keys(session, job_ids=jobs, upload_ids=uploads)
        for obj in batch:
            why = orphan_reason(obj.key, live)
            if why is None:
                known = JOB_OBJECT.match(obj.key) or UPLOAD_OBJECT.match(obj.key) or PREPARED_OBJECT.match(obj.key)
                seen.live += 1 if known else 0
                seen.unknown += 0 if known else 1
                continue
            ctx.store.delete(obj.key)
            seen.removed[why] += 1
            seen.removed_bytes += obj.size
            seen.removed_keys.append(obj.key)
        batch.clear()

    for prefix in SCANNED_PREFIXES:
        for obj in ctx.store.listing(prefix):
            seen.scanned += 1
            if obj.modified > cutoff:
                seen.young += 1
                continue
            batch.append(obj)
            if len(batch) >= JUDGE_BATCH:
                judge()
        if batch:
            judge()
    log.info("orphan collection: %s", seen.report())
    return seen
