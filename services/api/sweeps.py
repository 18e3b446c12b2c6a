"""POST /v1/sweeps: validate every trial as a job of its type, then store the sweep and its trials in one
transaction (the quota counts them all: a sweep that would pass it stores nothing), then enqueue them."""

from __future__ import annotations

import uuid

from celery import Celery
from pydantic import ValidationError
from sqlalchemy.orm import Session

from services.api.admission import admit
from services.api.submit import (
    check_references,
    check_storage_room,
    describe_validation_error,
    enqueue,
    recheck_uploads,
)
from shared.config import Settings
from shared.db import queries
from shared.db.models import Sweep
from shared.errors import InvalidInput
from shared.jobs.specs import JOB_TYPES
from shared.jobs.states import PRIORITIES
from shared.jobs.sweeps import MAX_TRIALS, OBJECTIVE_METRICS, SweepCreate


def submit_sweep(
    session: Session, *, celery: Celery, settings: Settings, tenant_id: uuid.UUID, body: SweepCreate
) -> Sweep:
    """Validate, store and enqueue a sweep's trials; returns the sweep."""
    spec = JOB_TYPES.get(body.type)
    if spec is None or body.type not in OBJECTIVE_METRICS:
        raise InvalidInput(f"type: sweeps run {sorted(OBJECTIVE_METRICS)}, got {body.type!r}", field="type")
    mode = body.objective_mode()
    if mode is None:
        known = sorted(OBJECTIVE_METRICS[body.type])
        raise InvalidInput(
            f"objective.metric: {body.type} reports no metric {body.objective.metric!r} a sweep can rank by; "
            f"known: {known}",
            field="objective.metric",
        )
    check_storage_room(session, tenant_id=tenant_id)
    count = body.trial_count()
    if count > MAX_TRIALS:
        field = "grid" if body.grid is not None else "trials"
        raise InvalidInput(
            f"{field}: the search and seeds make {count} trials; a sweep has at most {MAX_TRIALS}", field=field
        )
    trials = []
    for index, (varied, raw) in enumerate(body.trial_params()):
        try:
            params = spec.params.model_validate(raw)
        except ValidationError as exc:
            bad = describe_validation_error(exc, prefix="params")
            raise InvalidInput(f"trial {index} {varied}: {bad.message}", field=bad.field) from exc
        check_references(session, tenant_id=tenant_id, spec=spec, params=params, settings=settings)
        memory = admit(session, tenant_id=tenant_id, params=params, settings=settings)
        trials.append((varied, params, memory))
    if body.early_stopping is not None:
        longest = max(spec.total_units(params) for _, params, _ in trials)
        if body.early_stopping.min_steps >= longest:
            raise InvalidInput(
                f"early_stopping.min_steps: the first tick ({body.early_stopping.min_steps}) must come before the "
                f"trials end; the longest runs {longest} steps",
                field="early_stopping.min_steps",
            )
    sweep = queries.create_sweep(
        session,
        tenant_id=tenant_id,
        job_type=body.type,
        spec=body.model_dump(mode="json"),
        objective_metric=body.objective.metric,
        objective_mode=mode,
        max_parallel=body.max_parallel,
    )
    jobs = [
        queries.create_job(
            session,
            tenant_id=tenant_id,
            job_type=body.type,
            params=params.model_dump(mode="json"),
            queue=spec.queue,
            total=spec.total_units(params),
            max_attempts=settings.max_attempts,
            idempotency_key=None,
            priority=PRIORITIES[body.priority],
            memory_bytes=memory,
            sweep_id=sweep.id,
            sweep_params=varied,
        )[0]
        for varied, params, memory in trials
    ]
    for _varied, params, _memory in trials:  # the uploads they name are still there, under the tenant lock
        recheck_uploads(session, tenant_id=tenant_id, spec=spec, params=params)
    session.commit()  # the rows are durable before any message names them
    for job in jobs:
        enqueue(session, celery=celery, job_id=job.id, queue=job.queue)
    return sweep
