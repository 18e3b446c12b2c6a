"""/v1/jobs: submit, list, poll, cancel, delete, metrics, artifacts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from services.api.deps import (
    AppState,
    BearerKeyDep,
    SessionDep,
    SettingsDep,
    StateDep,
    StoreDep,
    TenantDep,
    check_page_limit,
)
from services.api.events import follow
from services.api.reads import EVENT_PAGE
from services.api.schemas import (
    ArtifactList,
    ArtifactOut,
    ErrorOut,
    JobCreate,
    JobDeletion,
    JobOut,
    JobPage,
    MetricPointOut,
    MetricsOut,
    Queueing,
)
from services.api.submit import submit_job
from shared.db import queries
from shared.errors import InvalidInput
from shared.jobs.specs import JOB_TYPES
from shared.jobs.states import JobState
from shared.queue import send_purge

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

DEFAULT_PAGE = 20
DEFAULT_ARTIFACT_PAGE = 100  # a job has a few dozen artifacts: one page holds them unless it samples very often
DEFAULT_MAX_POINTS = 500
MAX_POINTS_LIMIT = 10_000
IDEMPOTENCY_KEY_MAX = 200
PREFER_MAX = 200
PREFER_WAIT_DIGITS = 6

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Missing, wrong or revoked API key"},
    404: {"model": ErrorOut, "description": "No such job for this tenant"},
    422: {"model": ErrorOut, "description": "A field is invalid; `field` names it"},
}

SUBMIT_EXAMPLES: dict[str, Any] = {
    name: {"summary": spec.summary, "value": {"type": name, "params": spec.example}} for name, spec in JOB_TYPES.items()
}


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses={**ERRORS, 409: {"model": ErrorOut}, 429: {"model": ErrorOut, "description": "Over a quota"}},
)
async def create_job(
    body: Annotated[JobCreate, Body(openapi_examples=SUBMIT_EXAMPLES)],
    response: Response,
    state: StateDep,
    session: SessionDep,
    tenant_id: TenantDep,
    raw_key: BearerKeyDep,
    idempotency_key: Annotated[str | None, Header(max_length=IDEMPOTENCY_KEY_MAX)] = None,
    prefer: Annotated[
        str | None,
        Header(
            max_length=PREFER_MAX,
            description="`wait=N` (N <= 60): answer when the job ends or after N seconds, whichever is first",
        ),
    ] = None,
) -> JobOut:
    """Submit a job. Repeating a request with the same Idempotency-Key returns the first job (200).

    With ``Prefer: wait=N`` the answer comes when the job has ended or N seconds have passed, with
    ``Preference-Applied: wait=N``; the job is as ``GET`` would show it then.
    """
    wait_s = prefer_wait(prefer, limit=state.settings.max_prefer_wait_s)
    job, created = await run_in_threadpool(
        partial(
            submit_job,
            session,
            celery=state.celery,
            settings=state.settings,
            tenant_id=tenant_id,
            job_type=body.type,
            raw_params=body.params,
            idempotency_key=idempotency_key,
            webhook=body.webhook,
            webhook_events=body.webhook_events_filter,
            priority=body.priority,
        )
    )
    if created:
        state.metrics.jobs_submitted.labels(body.type).inc()
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    out = JobOut.of(job)
    if wait_s is not None:
        await run_in_threadpool(session.close)  # hold no connection while waiting
        await wait_until_done(state, job.id, timeout_s=wait_s)
        row: Any = await state.reader.job_row(raw_key, job.id)
        out = JobOut.of(row)
        response.headers["Preference-Applied"] = f"wait={wait_s}"
    return out


def prefer_wait(header: str | None, *, limit: int) -> int | None:
    """The ``wait`` preference of a Prefer header (RFC 7240), capped at ``limit``; None if absent.

    As the RFC asks, a preference that cannot be honoured (``wait=soon``) is ignored, not refused.
    """
    if not header:
        return None
    for item in header.split(","):
        name, _, value = item.split(";")[0].strip().partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            if value.isdigit() and len(value) <= PREFER_WAIT_DIGITS:
                return min(int(value), limit)
    return None


async def wait_until_done(state: AppState, job_id: uuid.UUID, *, timeout_s: float) -> bool:
    """Wait on the job's events (no database connection, no thread) until ``done``; False on timeout."""
    stream = follow(state.hub, job_id, after=0, load=state.reader.events_after, page=EVENT_PAGE, idle_s=timeout_s)
    try:
        async with asyncio.timeout(timeout_s), contextlib.aclosing(stream):
            async for batch in stream:
                if batch is not None and batch[-1].type == "done":
                    return True
    except TimeoutError:
        return False
    return False


@router.get("", response_model=JobPage, responses=ERRORS)
def list_jobs(
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    state: JobState | None = None,
    type: Annotated[str | None, Query(description="Filter by job type")] = None,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_PAGE,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> JobPage:
    """The caller's jobs, newest first, cursor-paginated."""
    check_page_limit(limit, settings)
    page = queries.list_jobs(
        session,
        tenant_id=tenant_id,
        state=state.value if state else None,
        job_type=type,
        limit=limit,
        cursor=cursor,
    )
    return JobPage(items=[JobOut.of(j) for j in page.items], next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_job(job_id: uuid.UUID, state: StateDep, raw_key: BearerKeyDep) -> Response:
    """A job's state, attempt, progress with ETA, latest metrics, warnings and error; a queued job's
    approximate queue position and why it has not started (``queueing``)."""

    async def render_queued(job: Any) -> bytes:
        place = await run_in_threadpool(_queueing, state, job)
        return JobOut.of(job, queueing=place).model_dump_json().encode()

    # The polling hot path: one query on the event loop (services/api/reads.py); a queued job one more.
    body = await state.reader.job_for_key(
        raw_key, job_id, _render_job, admit=state.limiter.admit, render_queued=render_queued
    )
    return Response(body, media_type="application/json")


def _render_job(job: Any) -> bytes:
    return JobOut.of(job).model_dump_json().encode()


def _queueing(state: AppState, job: Any) -> Queueing | None:
    """Where a queued job stands (fair share: shared/db/queries/scheduling.py); None once it left the queue."""
    with state.sessions() as session:
        place = queries.pending(
            session,
            job_id=job.id,
            tenant_id=job.tenant_id,
            queue=job.queue,
            window_s=state.settings.fair_share_window_s,
            online_within_s=state.settings.lease_s,
            memory_bytes=job.memory_bytes,
        )
    return Queueing(position=place.position, reason=place.reason) if place is not None else None


@router.post("/{job_id}/cancel", response_model=JobOut, responses={**ERRORS, 409: {"model": ErrorOut}})
def cancel_job(job_id: uuid.UUID, state: StateDep, session: SessionDep, tenant_id: TenantDep) -> JobOut:
    """Cancel: a queued job never runs; a running one checkpoints and stops within a step."""
    job = queries.request_cancel(session, tenant_id=tenant_id, job_id=job_id)
    session.commit()
    state.reader.forget(job_id)
    return JobOut.of(job)


@router.delete("/{job_id}", status_code=202, response_model=JobDeletion, responses=ERRORS)
def delete_job(job_id: uuid.UUID, state: StateDep, session: SessionDep, tenant_id: TenantDep) -> JobDeletion:
    """Delete a job: its row, loss history, artifacts and every checkpoint of every attempt.

    202 at once: from then on the job is a 404 everywhere else, and a running one stops within a step. Its
    objects and rows are removed in the background (workers/lifecycle.py); DELETE again answers 202 until
    they are gone, then 404. Jobs that used it (a gan.sample of its generator) keep their own outputs."""
    marked = queries.mark_job_deleted(session, tenant_id=tenant_id, job_id=job_id)
    session.commit()
    state.reader.forget(job_id)
    try:
        send_purge(state.celery)
    except Exception as exc:  # Redis away: the reconciler's pass purges it
        log.warning("job %s: could not ask for its purge now (%s); the reconciler will", job_id, exc)
    detail = "it stops within a step, then its data is removed" if marked.was_running else "its data is being removed"
    return JobDeletion(id=marked.job_id, stopping=marked.was_running, detail=detail)


@router.get("/{job_id}/metrics", response_model=MetricsOut, responses=ERRORS)
def get_metrics(
    job_id: uuid.UUID,
    session: SessionDep,
    tenant_id: TenantDep,
    names: Annotated[
        list[str] | None, Query(description="Metric names; repeat or comma-separate. Default: all")
    ] = None,
    since_step: Annotated[int, Query(ge=-1, description="Only steps after this one")] = -1,
    until_step: Annotated[
        int | None,
        Query(ge=0, description="Only steps up to this one (inclusive; above since_step). Default: no bound"),
    ] = None,
    max_points: Annotated[
        int,
        Query(
            ge=1,
            le=MAX_POINTS_LIMIT,
            description="Longer series are bucket-averaged server-side, over the steps in (since_step, until_step]",
        ),
    ] = DEFAULT_MAX_POINTS,
) -> Response:
    """The loss history, downsampled to at most ``max_points`` per metric; zoom in with since_step and until_step."""
    if until_step is not None and until_step <= since_step:
        raise InvalidInput(f"until_step must be above since_step ({since_step}), got {until_step}", field="until_step")
    queries.get_job(session, tenant_id=tenant_id, job_id=job_id)
    wanted = [n for item in (names or []) for n in item.split(",") if n]
    known = queries.metric_names(session, job_id=job_id)
    selected = wanted or known
    series = queries.metric_series(
        session,
        job_id=job_id,
        names=selected,
        since_step=since_step,
        until_step=until_step,
        max_points=max_points,
    )
    body = MetricsOut(
        job_id=job_id,
        names=known,
        since_step=since_step,
        until_step=until_step,
        max_points=max_points,
        series={name: [MetricPointOut(**vars(p)) for p in points] for name, points in series.items()},
    )
    # Serialised once here: returning the model would have FastAPI validate thousands of points again.
    return Response(body.model_dump_json(), media_type="application/json")


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=ERRORS)
def list_artifacts(
    job_id: uuid.UUID,
    session: SessionDep,
    tenant_id: TenantDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1)] = DEFAULT_ARTIFACT_PAGE,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> ArtifactList:
    """A job's stored outputs (sample grids, weights, images) by name, cursor-paginated."""
    check_page_limit(limit, settings)
    queries.get_job(session, tenant_id=tenant_id, job_id=job_id)
    page = queries.list_artifacts(session, job_id=job_id, limit=limit, cursor=cursor)
    return ArtifactList(items=[ArtifactOut.of(a) for a in page.items], next_cursor=page.next_cursor)


@router.get(
    "/{job_id}/artifacts/{name:path}",
    responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}, 307: {"description": "Presigned URL"}},
    response_model=None,
)
def download_artifact(
    job_id: uuid.UUID,
    name: str,
    session: SessionDep,
    tenant_id: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    redirect: Annotated[bool, Query(description="307 to a short-lived presigned URL, where the store has one")] = False,
) -> Response:
    """Stream an artifact, or redirect to a presigned URL."""
    queries.get_job(session, tenant_id=tenant_id, job_id=job_id)
    artifact = queries.get_artifact(session, job_id=job_id, name=name)
    session.close()  # don't hold a connection while streaming
    if redirect:
        url = store.presigned_get(artifact.key, expires_s=settings.presign_expiry_s)
        if url is not None:
            return RedirectResponse(url, status_code=307)
    chunks = store.stream(artifact.key)
    filename = artifact.name.rsplit("/", 1)[-1]
    return StreamingResponse(
        chunks,
        media_type=artifact.content_type,
        headers={
            "Content-Length": str(artifact.size),
            "ETag": f'"{artifact.sha256}"',
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )
