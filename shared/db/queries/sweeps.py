"""The reconciler's sweeps over every tenant's jobs: expired leases, and queued jobs whose
message may be lost; and the enqueue bookkeeping that submit and the reconciler share."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from shared.db.models import Job
from shared.db.queries.events import append_events, state_event, terminal_events
from shared.jobs.states import JobState


def mark_enqueued(session: Session, *, job_ids: Sequence[uuid.UUID]) -> None:
    """Record that a message for these jobs was handed to the broker."""
    if job_ids:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(enqueued_at=func.now()))


# --- metrics and artifacts: read side -----------------------------------------------


@dataclass(frozen=True)
class Reconciled:
    """What one reconciler pass changed."""

    requeued: list[tuple[uuid.UUID, str]]
    failed: list[uuid.UUID]
    cancelled: list[uuid.UUID]


def expire_leases(session: Session, *, now: datetime | None = None) -> Reconciled:
    """Running jobs whose lease expired: requeue, fail (attempts used up) or cancel.

    Rows locked by a stalled runner are skipped (SKIP LOCKED) and handled on a later pass,
    so the reconciler never waits on a zombie's open transaction. ``now``: the database's clock
    unless a simulation drives it (bench/scale.py).
    """
    clock = {"now": now}
    cancelled = session.execute(
        text(
            """
            UPDATE jobs SET state = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                   finished_at = coalesce(CAST(:now AS timestamptz), now()), updated_at = now()
            WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < coalesce(CAST(:now AS timestamptz), now()) AND cancel_requested FOR UPDATE SKIP LOCKED)
            RETURNING id, attempt
            """
        ),
        clock,
    ).all()
    failed = session.execute(
        text(
            """
            UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_expires_at = NULL,
                   finished_at = coalesce(CAST(:now AS timestamptz), now()), updated_at = now(), error_code = 'attempts_exhausted',
                   error_message = 'the worker running this job was lost ' || (attempt - handbacks) ||
                                   ' time(s); max_attempts (' || max_attempts || ') is used up'
            WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < coalesce(CAST(:now AS timestamptz), now())
                           AND attempt - handbacks >= max_attempts FOR UPDATE SKIP LOCKED)
            RETURNING id, attempt, error_code, error_message
            """
        ),
        clock,
    ).all()
    requeued = session.execute(
        text(
            """
            UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                   enqueued_at = NULL, updated_at = now()
            WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < coalesce(CAST(:now AS timestamptz), now())
                           AND attempt - handbacks < max_attempts FOR UPDATE SKIP LOCKED)
            RETURNING id, queue, attempt
            """
        ),
        clock,
    ).all()
    for r in cancelled:
        append_events(session, job_id=r.id, items=terminal_events(JobState.CANCELLED.value, attempt=r.attempt))
    for r in failed:
        append_events(
            session,
            job_id=r.id,
            items=terminal_events(
                JobState.FAILED.value, attempt=r.attempt, error_code=r.error_code, error_message=r.error_message
            ),
        )
    for r in requeued:
        append_events(session, job_id=r.id, items=[state_event(JobState.QUEUED.value, attempt=r.attempt)])
    return Reconciled(
        requeued=[(r.id, r.queue) for r in requeued],
        failed=[r.id for r in failed],
        cancelled=[r.id for r in cancelled],
    )


def queued_needing_send(session: Session, *, grace_s: float, limit: int) -> list[tuple[uuid.UUID, str]]:
    """Queued jobs handed to the broker (or created, if never handed over) more than ``grace_s`` ago."""
    rows = session.execute(
        select(Job.id, Job.queue)
        .where(
            Job.state == JobState.QUEUED.value,
            func.coalesce(Job.enqueued_at, Job.created_at) < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, grace_s),
        )
        .order_by(Job.created_at)
        .limit(limit)
    ).all()
    return [(r.id, r.queue) for r in rows]


def queued_per_queue(session: Session) -> dict[str, int]:
    """How many jobs are queued on each queue."""
    rows = session.execute(
        select(Job.queue, func.count()).where(Job.state == JobState.QUEUED.value).group_by(Job.queue)
    ).all()
    return {queue: int(count) for queue, count in rows}
