"""A running sweep trial's early-stopping reads: its sweep's rule, and where every trial stood at a tick.

The runner's heartbeat thread asks these after it flushed the trial's metrics (workers/runtime.py); the
decision itself is pure (shared/jobs/sweeps.py: judge). Each trial judges only itself, against what the
others committed, so no lock is taken.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from shared.db.models import Job, Sweep
from shared.jobs.sweeps import EarlyStopping, Standing


@dataclass(frozen=True)
class TrialRule:
    """A trial's sweep, the metric it is ranked by, and the early-stopping rule (if the sweep has one)."""

    sweep_id: uuid.UUID
    metric: str
    mode: str
    rule: EarlyStopping


def trial_rule(session: Session, *, job_id: uuid.UUID) -> TrialRule | None:
    """The early-stopping rule of the job's sweep; None if the job is no trial or its sweep has none."""
    row = session.execute(
        select(Sweep.id, Sweep.objective_metric, Sweep.objective_mode, Sweep.spec)
        .join(Job, Job.sweep_id == Sweep.id)
        .where(Job.id == job_id)
    ).first()
    if row is None or not row.spec.get("early_stopping"):
        return None
    try:
        rule = EarlyStopping.model_validate(row.spec["early_stopping"])
    except ValidationError:  # a spec stored by a newer API than this worker: never stop on a rule it misreads
        return None
    return TrialRule(sweep_id=row.id, metric=row.objective_metric, mode=row.objective_mode, rule=rule)


STANDINGS = text(
    """
    SELECT j.id AS job_id, s.lo, s.hi, s.mean, s.last,
           EXISTS (SELECT 1 FROM metrics r WHERE r.job_id = j.id AND r.name = :metric AND r.step >= :step) AS reached
    FROM jobs j
    CROSS JOIN LATERAL (
        SELECT min(m.value) AS lo, max(m.value) AS hi, avg(m.value) AS mean,
               (array_agg(m.value ORDER BY m.step DESC))[1] AS last
        FROM metrics m WHERE m.job_id = j.id AND m.name = :metric AND m.step <= :step
    ) AS s
    WHERE j.sweep_id = :sweep_id AND s.last IS NOT NULL
    """
)


def standings(
    session: Session, *, rule: TrialRule, job_id: uuid.UUID, step: int
) -> tuple[Standing | None, list[Standing]]:
    """The trial's own standing at ``step``, and those of the other trials that reached it.

    A trial reached ``step`` once it reported the metric at that step or later; its standing is read from
    what it reported up to ``step`` (best, running mean, last). Trials stopped before ``step`` never reached
    it, so they do not drag the comparison down.
    """
    rows = session.execute(STANDINGS, {"sweep_id": rule.sweep_id, "metric": rule.metric, "step": step}).all()
    own: Standing | None = None
    others: list[Standing] = []
    for row in rows:
        best = row.lo if rule.mode == "min" else row.hi
        standing = Standing(best=float(best), mean=float(row.mean), last=float(row.last))
        if row.job_id == job_id:
            own = standing
        elif row.reached:
            others.append(standing)
    return own, others
