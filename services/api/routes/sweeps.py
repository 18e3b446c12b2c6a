"""/v1/sweeps: hyperparameter sweeps. Each trial is an ordinary job (GET /v1/jobs/{id} has all of it)."""

from __future__ import annotations

import uuid
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from services.api.deps import SessionDep, SettingsDep, StateDep, TenantDep, check_page_limit
from services.api.schemas import ErrorOut, SweepOut, SweepPage, SweepSummary
from services.api.sweeps import submit_sweep
from shared.db import queries
from shared.jobs.sweeps import SweepCreate

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

DEFAULT_PAGE = 20
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}}


@router.post("", status_code=201, response_model=SweepOut, responses={**ERRORS, 429: {"model": ErrorOut}})
async def create_sweep(
    body: SweepCreate, response: Response, state: StateDep, session: SessionDep, tenant_id: TenantDep
) -> SweepOut:
    """Start a sweep: a job type, base params, a grid (every combination) or a random search (log-uniform
    for rates), seeds, an objective, and max_parallel. Every trial is checked like a submit; a bad one is a 422
    naming the trial and the field, and nothing is stored. Trials count against your quota."""
    sweep = await run_in_threadpool(
        partial(submit_sweep, session, celery=state.celery, settings=state.settings, tenant_id=tenant_id, body=body)
    )
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return SweepOut.of(sweep, queries.sweep_trials(session, sweep_id=sweep.id))


@router.get("", response_model=SweepPage, responses=ERRORS)
def list_sweeps(
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_PAGE,
    cursor: str | None = None,
) -> SweepPage:
    """The caller's sweeps, newest first."""
    check_page_limit(limit, settings)
    page = queries.list_sweeps(session, tenant_id=tenant_id, limit=limit, cursor=cursor)
    return SweepPage(items=[SweepSummary.of(s) for s in page.items], next_cursor=page.next_cursor)


@router.get("/{sweep_id}", response_model=SweepOut, responses=ERRORS)
def get_sweep(sweep_id: uuid.UUID, session: SessionDep, tenant_id: TenantDep) -> SweepOut:
    """Every trial's params, state and objective so far (final once ended), and the best succeeded trial."""
    sweep = queries.get_sweep(session, tenant_id=tenant_id, sweep_id=sweep_id)
    return SweepOut.of(sweep, queries.sweep_trials(session, sweep_id=sweep_id))


@router.post("/{sweep_id}/cancel", response_model=SweepOut, responses=ERRORS)
def cancel_sweep(sweep_id: uuid.UUID, state: StateDep, session: SessionDep, tenant_id: TenantDep) -> SweepOut:
    """Cancel the sweep: its queued trials never run, its running ones checkpoint and stop within a step."""
    sweep = queries.cancel_sweep(session, tenant_id=tenant_id, sweep_id=sweep_id)
    session.commit()
    trials = queries.sweep_trials(session, sweep_id=sweep_id)
    for trial in trials:
        state.reader.forget(trial.id)
    return SweepOut.of(sweep, trials)
