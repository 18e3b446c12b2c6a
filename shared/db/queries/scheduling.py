"""Fair share: which queued job a claim takes, and why a queued job is still waiting.

A ``run_job`` message is a wake-up for its queue, not an order to run the job it names: the claim takes
the fairest claimable job of that queue (``pick_job``), and the message's job waits its turn like any other.
Postgres decides; Redis only says "a worker is free". The policy, in order:

1. **Tenants by usage per weight.** A tenant's usage is the worker-seconds its jobs held this queue inside
   the last ``window_s`` (finished attempts from their claim to their end; a running attempt by its elapsed
   time, and at least the tenant's mean attempt time there, so claims made in the same instant are charged
   what they will cost), divided by its ``share_weight``. The tenant with the least goes first, so over a
   window backlogged tenants get worker time in proportion to their weights, and a tenant that has run
   nothing lately starts at once however long another tenant's backlog is. Ties (nothing run yet) go to
   the tenant whose oldest queued job is oldest.
2. **A tenant at its ``max_running_jobs`` on the queue is skipped** until one of its jobs ends.
3. **Within a tenant**, ``priority`` (high, normal, low), then first come, first served; a trial of a sweep
   that already runs ``max_parallel`` trials is passed over.

The chosen row is locked ``FOR UPDATE SKIP LOCKED``, so concurrent claimers take different jobs and never
wait on each other; the claim's UPDATE (shared/db/queries/runner.py) then takes the lease, and its
``attempt`` stays the fencing token. ``now`` is a parameter (default: the database's clock) so a
simulation can drive the same statements through its own time (bench/scale.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.jobs.memory import describe_bytes
from shared.jobs.states import PRIORITY_NAMES

DEFAULT_WINDOW_S: Final = 3600.0

# Every tenant with a queued job on :queue, in fair-share order, with what the order and the limit need.
_SHARES = """
WITH clock AS (SELECT coalesce(CAST(:now AS timestamptz), now()) AS now),
backlog AS (
    SELECT tenant_id, min(created_at) AS oldest, count(*) AS queued
    FROM jobs WHERE queue = :queue AND state = 'queued'
    GROUP BY tenant_id
),
usage AS (
    SELECT j.tenant_id,
           count(*) FILTER (WHERE j.state = 'running') AS running,
           coalesce(avg(extract(epoch FROM j.finished_at - j.claimed_at))
                    FILTER (WHERE j.finished_at IS NOT NULL), 0) AS mean_s,
           coalesce(sum(extract(epoch FROM coalesce(j.finished_at, clock.now)
                                 - greatest(j.claimed_at, clock.now - make_interval(secs => :window))))
                    FILTER (WHERE j.finished_at IS NOT NULL), 0) AS finished_s,
           coalesce(sum(extract(epoch FROM clock.now - greatest(j.claimed_at, clock.now
                                 - make_interval(secs => :window))))
                    FILTER (WHERE j.state = 'running'), 0) AS running_s,
           array_agg(extract(epoch FROM clock.now - j.claimed_at)) FILTER (WHERE j.state = 'running') AS elapsed
    FROM jobs j CROSS JOIN clock JOIN backlog b ON b.tenant_id = j.tenant_id
    WHERE j.queue = :queue AND j.claimed_at IS NOT NULL
      AND (j.state = 'running' OR j.finished_at > clock.now - make_interval(secs => :window))
    GROUP BY j.tenant_id
)
SELECT b.tenant_id, b.queued, t.share_weight, t.max_running_jobs,
       coalesce(u.running, 0) AS running,
       (coalesce(u.finished_s, 0) + coalesce(u.running_s, 0)
        + coalesce((SELECT sum(greatest(u.mean_s - e, 0)) FROM unnest(u.elapsed) AS e), 0)) / t.share_weight AS usage
FROM backlog b JOIN tenants t ON t.id = b.tenant_id LEFT JOIN usage u ON u.tenant_id = b.tenant_id
ORDER BY usage, b.oldest, b.tenant_id
"""

# The tenant's next job by its own order; a row another claimer holds is skipped, not waited for.
_NEXT_OF_TENANT = """
SELECT id, sweep_id FROM jobs
WHERE queue = :queue AND tenant_id = :tenant_id AND state = 'queued'
  AND NOT cancel_requested AND attempt - handbacks < max_attempts
  AND (memory_bytes IS NULL OR CAST(:capacity AS bigint) IS NULL OR memory_bytes <= CAST(:capacity AS bigint))
  AND (sweep_id IS NULL OR NOT sweep_id = ANY(CAST(:full AS uuid[])))
ORDER BY priority DESC, created_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

# Limits hold exactly under concurrent claims: claims that could pass one serialise on a transaction-scoped
# advisory lock (held to the claim's commit), then count what runs now. Two lock spaces: tenant+queue, sweep.
_LOCK = "SELECT pg_advisory_xact_lock(:space, hashtext(:key))"
_TENANT_LOCK_SPACE, _SWEEP_LOCK_SPACE = 17_001, 17_002
_TENANT_RUNNING = "SELECT count(*) FROM jobs WHERE tenant_id = :tenant_id AND queue = :queue AND state = 'running'"
_SWEEP_ROOM = """
SELECT s.max_parallel - (SELECT count(*) FROM jobs r WHERE r.sweep_id = s.id AND r.state = 'running')
FROM sweeps s WHERE s.id = :sweep_id
"""
MAX_SWEEPS_TRIED = 20  # full sweeps a claim steps past in one tenant before trying the next tenant


@dataclass(frozen=True)
class Share:
    """One tenant with queued work on a queue, as the policy sees it."""

    tenant_id: uuid.UUID
    queued: int
    weight: float
    max_running: int | None
    running: int
    usage: float  # charged worker-seconds in the window / weight

    @property
    def at_limit(self) -> bool:
        """Whether the tenant runs as many jobs on the queue as it may."""
        return self.max_running is not None and self.running >= self.max_running


def shares(session: Session, *, queue: str, window_s: float, now: datetime | None = None) -> list[Share]:
    """Every tenant with queued jobs on ``queue``, first to be served first."""
    rows = session.execute(text(_SHARES), {"queue": queue, "window": window_s, "now": now}).all()
    return [
        Share(
            tenant_id=r.tenant_id,
            queued=int(r.queued),
            weight=float(r.share_weight),
            max_running=r.max_running_jobs,
            running=int(r.running),
            usage=float(r.usage),
        )
        for r in rows
    ]


def pick_job(
    session: Session, *, queue: str, window_s: float, now: datetime | None = None, capacity: int | None = None
) -> uuid.UUID | None:
    """The fairest claimable job of ``queue`` that fits ``capacity`` bytes of free device memory (None: any),
    locked for this transaction; None when no tenant may start one."""
    for share in shares(session, queue=queue, window_s=window_s, now=now):
        if share.at_limit or not _below_running_limit(session, share, queue):
            continue
        job_id = _next_of_tenant(session, share.tenant_id, queue=queue, capacity=capacity)
        if job_id is not None:
            return job_id
    return None


def _below_running_limit(session: Session, share: Share, queue: str) -> bool:
    """For a tenant with a running limit: take its lock, then count its running jobs afresh."""
    if share.max_running is None:
        return True
    session.execute(text(_LOCK), {"space": _TENANT_LOCK_SPACE, "key": f"{share.tenant_id}:{queue}"})
    running = int(session.scalar(text(_TENANT_RUNNING), {"tenant_id": share.tenant_id, "queue": queue}) or 0)
    return running < share.max_running


def _next_of_tenant(session: Session, tenant_id: uuid.UUID, *, queue: str, capacity: int | None) -> uuid.UUID | None:
    """The tenant's next job by its own order, stepping past trials of sweeps already at max_parallel."""
    full: list[uuid.UUID] = []
    for _ in range(MAX_SWEEPS_TRIED):
        row = session.execute(
            text(_NEXT_OF_TENANT), {"queue": queue, "tenant_id": tenant_id, "capacity": capacity, "full": full}
        ).first()
        if row is None:
            return None
        if row.sweep_id is None:
            return uuid.UUID(str(row.id))
        session.execute(text(_LOCK), {"space": _SWEEP_LOCK_SPACE, "key": str(row.sweep_id)})
        if int(session.scalar(text(_SWEEP_ROOM), {"sweep_id": row.sweep_id}) or 0) > 0:
            return uuid.UUID(str(row.id))
        full.append(row.sweep_id)
    return None


_NAMED = """
SELECT queue, memory_bytes,
       (state = 'queued' OR (state = 'running' AND lease_expires_at < coalesce(CAST(:now AS timestamptz), now())))
       AND NOT cancel_requested AND attempt - handbacks < max_attempts AS claimable
FROM jobs WHERE id = :id
"""


@dataclass(frozen=True)
class Named:
    """The job a message names, as the claim sees it."""

    queue: str
    claimable: bool  # it could itself be claimed (queued, or running with an expired lease)
    memory_bytes: int | None

    def fits(self, capacity: int | None) -> bool:
        """Whether a worker with ``capacity`` bytes free may take it."""
        return capacity is None or self.memory_bytes is None or self.memory_bytes <= capacity


def named_job(session: Session, job_id: uuid.UUID, *, now: datetime | None = None) -> Named | None:
    """The job a message names (None: an unknown id)."""
    row = session.execute(text(_NAMED), {"id": job_id, "now": now}).first()
    return Named(row.queue, bool(row.claimable), row.memory_bytes) if row is not None else None


# -- Why a queued job waits (the read side) --------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A queued job's approximate place and the main reason it has not started."""

    position: int  # 1: the next job this queue's next free worker takes
    reason: str


_OWN_AHEAD = """
SELECT count(*) FROM jobs o, jobs me
WHERE me.id = :job_id AND o.tenant_id = me.tenant_id AND o.queue = me.queue AND o.state = 'queued'
  AND o.id <> me.id
  AND (o.priority > me.priority
       OR (o.priority = me.priority AND (o.created_at, o.id) < (me.created_at, me.id)))
"""


def pending(
    session: Session,
    *,
    job_id: uuid.UUID,
    tenant_id: uuid.UUID,
    queue: str,
    window_s: float,
    online_within_s: float,
    memory_bytes: int | None = None,
) -> Pending | None:
    """Where a queued job stands. The position assumes the tenants ahead keep their order and take turns in
    proportion to their weights (so it is approximate); the reason is the first that applies of: no worker
    of the queue online (seen within ``online_within_s``), none with ``memory_bytes`` free, the tenant's
    running limit, its own jobs ahead, other tenants' turn."""
    all_shares = shares(session, queue=queue, window_s=window_s)
    mine = next((s for s in all_shares if s.tenant_id == tenant_id), None)
    if mine is None:  # no longer queued
        return None
    own_ahead = int(session.scalar(text(_OWN_AHEAD), {"job_id": job_id}) or 0)
    order = [s.tenant_id for s in all_shares]
    mine_at = order.index(tenant_id)
    # Tenants take turns in the policy's order, each in proportion to its weight: one served before this
    # tenant gets a turn more by the time this job's turn comes.
    others = sum(
        min(s.queued, int((own_ahead + (1 if order.index(s.tenant_id) < mine_at else 0)) * s.weight / mine.weight))
        for s in all_shares
        if s.tenant_id != tenant_id and not s.at_limit
    )
    position = own_ahead + others + 1
    online = workers_online(session, queue=queue, within_s=online_within_s)
    if online.count == 0:
        reason = f"no {queue} worker is online"
    elif memory_bytes is not None and memory_bytes > online.most_free:
        reason = (
            f"no {queue} worker with {describe_bytes(memory_bytes)} free is online (the most any of the "
            f"{online.count} has: {describe_bytes(online.most_free)})"
        )
    elif mine.at_limit:
        reason = f"your tenant is at its limit of {mine.max_running} running jobs on the {queue} queue"
    elif own_ahead:
        reason = f"behind {own_ahead} of your jobs" + (f" and {others} of other tenants" if others else "")
    elif others:
        reason = f"other tenants' turn by fair share: {others} of their jobs go first"
    else:
        reason = f"next: waiting for a free {queue} worker"
    return Pending(position=position, reason=reason)


@dataclass(frozen=True)
class Online:
    """The workers of a queue seen lately."""

    count: int
    most_free: int  # the largest advertised free device memory among them, in bytes


_ONLINE = """
SELECT count(*) AS workers, coalesce(max(memory_free_bytes), 0) AS most_free FROM worker_presence
WHERE queues ? :queue AND seen_at > coalesce(CAST(:now AS timestamptz), now()) - make_interval(secs => :within)
"""


def workers_online(session: Session, *, queue: str, within_s: float, now: datetime | None = None) -> Online:
    """How many workers of ``queue`` advertised themselves in the last ``within_s``, and the most free memory."""
    row = session.execute(text(_ONLINE), {"queue": queue, "within": within_s, "now": now}).one()
    return Online(int(row.workers), int(row.most_free))


_ADVERTISE = """
INSERT INTO worker_presence (owner, queues, device, memory_total_bytes, memory_free_bytes, seen_at)
VALUES (:owner, CAST(:queues AS jsonb), :device, :total, :free, coalesce(CAST(:now AS timestamptz), now()))
ON CONFLICT (owner) DO UPDATE SET queues = excluded.queues, device = excluded.device,
    memory_total_bytes = excluded.memory_total_bytes, memory_free_bytes = excluded.memory_free_bytes,
    seen_at = excluded.seen_at
"""


def advertise(
    session: Session,
    *,
    owner: str,
    queues: Sequence[str],
    device: str,
    total_bytes: int,
    free_bytes: int,
    now: datetime | None = None,
) -> None:
    """Record (or refresh) a worker process's device and the queues it serves."""
    session.execute(
        text(_ADVERTISE),
        {
            "owner": owner,
            "queues": json.dumps(sorted(queues)),
            "device": device,
            "total": total_bytes,
            "free": free_bytes,
            "now": now,
        },
    )


def forget_worker(session: Session, *, owner: str) -> None:
    """A worker process that exits takes its presence with it."""
    session.execute(text("DELETE FROM worker_presence WHERE owner = :owner"), {"owner": owner})


PRESENCE_KEEP_S = 24 * 3600.0  # a killed worker's row (no exit hook ran) is pruned after this long unseen


def prune_presence(session: Session, *, older_than_s: float = PRESENCE_KEEP_S) -> int:
    """Delete the rows of workers unseen for ``older_than_s`` (killed ones never remove their own); how many."""
    result = session.execute(
        text("DELETE FROM worker_presence WHERE seen_at < now() - make_interval(secs => :age)"), {"age": older_than_s}
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def priority_name(value: int) -> str:
    """The API's name of a stored priority."""
    return PRIORITY_NAMES.get(value, str(value))


_NEXT_HELD_BACK = """
SELECT j.id, j.queue FROM jobs ended
JOIN tenants t ON t.id = ended.tenant_id
JOIN jobs j ON j.queue = ended.queue AND j.state = 'queued'
  AND ((t.max_running_jobs IS NOT NULL AND j.tenant_id = ended.tenant_id)
       OR (ended.sweep_id IS NOT NULL AND j.sweep_id = ended.sweep_id))
WHERE ended.id = :job_id
ORDER BY (j.sweep_id IS NOT DISTINCT FROM ended.sweep_id) DESC, j.priority DESC, j.created_at, j.id
LIMIT 1
"""


def next_held_back(session: Session, *, ended_job_id: uuid.UUID) -> tuple[uuid.UUID, str] | None:
    """When a job of a tenant with a running limit, or a sweep's trial, ends: the next queued job it held back
    (the sweep's next trial first), and its queue. The messages of held-back jobs may have been spent by claims
    that had to pass them over, so the caller wakes a worker for this one; None when nothing was held back."""
    row = session.execute(text(_NEXT_HELD_BACK), {"job_id": ended_job_id}).first()
    return (row.id, row.queue) if row is not None else None
