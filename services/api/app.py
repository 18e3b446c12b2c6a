"""The FastAPI app factory: ``uvicorn services.api.app:create_app --factory``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api import openapi
from services.api.bodylimit import BodyLimitMiddleware
from services.api.controlchars import ControlCharacterMiddleware
from services.api.deps import AppState
from services.api.events import EventHub
from services.api.metrics import ApiMetrics, RequestMetricsMiddleware
from services.api.ratelimit import RateLimiter
from services.api.reads import JobReader
from services.api.routes import events, health, jobs, metrics, models, sweeps, ui, uploads, usage, webhooks
from shared.config import Settings
from shared.db.session import make_engine, make_sessionmaker
from shared.errors import AtelierError
from shared.events import EventPublisher
from shared.queue import make_celery, send_webhook_deliveries
from shared.storage import S3ObjectStore, make_store

log = logging.getLogger(__name__)
RETRY_AFTER_S = "5"
REQUEST_ID_HEADER = "X-Request-ID"
DATABASE_REASON_CHARS = 200

DESCRIPTION = """
Atelier trains GANs and runs neural style transfer as jobs.

Submit a job with `POST /v1/jobs`, poll `GET /v1/jobs/{id}`, read the loss history from
`/metrics` and download outputs from `/artifacts`. Every request needs
`Authorization: Bearer <api key>`.
"""


def _error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    body: dict[str, str | None] = {"code": code, "message": message, "field": field}
    if request_id is not None:
        body["request_id"] = request_id
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _database_reason(exc: DBAPIError) -> str:
    """What the database said about a value, e.g. ``value too long for type character varying(500)``."""
    diag = getattr(exc.orig, "diag", None)
    reason = getattr(diag, "message_primary", None) or str(exc.orig).strip().splitlines()[0]
    return reason[:DATABASE_REASON_CHARS]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AtelierError)
    async def atelier_error(_request: Request, exc: AtelierError) -> JSONResponse:
        headers = {}
        if exc.status_code in (429, 503):
            retry_after = getattr(exc, "retry_after_s", None)
            headers["Retry-After"] = str(retry_after) if retry_after is not None else RETRY_AFTER_S
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return _error(exc.status_code, exc.code, exc.message, exc.field, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        fields = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
            field = ".".join(loc) or "body"
            fields.append(field)
            problems.append(f"{field}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid_input", "; ".join(problems), fields[0] if fields else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    async def database_refused_value(request: Request, exc: DataError) -> JSONResponse:
        # The request carried a value the database cannot hold (too long for its column, NUL,
        # an invalid byte sequence, out of range): the caller's mistake, not an outage.
        reason = _database_reason(exc)
        log.info("database refused a value in %s %s: %s", request.method, request.url.path, reason)
        return _error(422, "invalid_input", f"a value in the request cannot be stored: {reason}")

    # Only failures of the database itself are outages: a lost or refused connection, a timeout,
    # an exhausted pool (OperationalError also covers server-side cancels, deadlocks, restarts).
    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def database_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return _error(
            503, "unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": RETRY_AFTER_S}
        )

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:  # the driver saw the connection drop
            return await database_down(request, exc)
        return await internal_error(request, exc)  # a statement Atelier got wrong: a bug

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Everything not mapped above is a bug. The id ties the client's report to this log line.
        request_id = uuid.uuid4().hex
        log.error(
            "internal error %s on %s %s: %s",
            request_id,
            request.method,
            request.url.path,
            type(exc).__name__,
            exc_info=exc,
        )
        return _error(
            500,
            "internal",
            f"internal error; quote request id {request_id} when reporting it",
            headers={REQUEST_ID_HEADER: request_id},
            request_id=request_id,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; settings default to the environment (ATELIER_*)."""
    settings = settings or Settings()
    api_metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings, call_deadline_s=settings.api_db_call_deadline_s)
        store = make_store(settings)
        if isinstance(store, S3ObjectStore):
            try:
                store.ensure_bucket()
            except Exception as exc:  # readyz reports it; the API still serves what it can
                log.warning("could not ensure bucket %s: %s", settings.s3_bucket, exc)
        reader = JobReader(settings.database_url, cache_s=settings.job_read_cache_s)
        limiter = RateLimiter(settings.redis_url, per_s=settings.rate_limit_per_s, burst=settings.rate_limit_burst)
        celery = make_celery(settings)
        sessions = make_sessionmaker(engine)
        publisher = EventPublisher(settings, celery=celery, dispatch=send_webhook_deliveries)
        publisher.install(sessions)
        hub = EventHub(settings.redis_url, timeout_s=settings.redis_timeout_s)
        app.state.atelier = AppState(
            settings=settings,
            sessions=sessions,
            store=store,
            celery=celery,
            reader=reader,
            limiter=limiter,
            hub=hub,
            metrics=api_metrics,
        )
        api_metrics.job_table.sessions = sessions  # read at scrape time, with its own short deadline
        yield
        api_metrics.job_table.sessions = None
        api_metrics.job_table.close()
        await hub.close()
        publisher.close()
        await limiter.close()
        await reader.close()
        engine.dispose()

    app = FastAPI(title="Atelier", version="1", description=DESCRIPTION, lifespan=lifespan)
    _install_error_handlers(app)

    def body_limit(path: str) -> tuple[int, str]:
        if path.startswith(uploads.router.prefix):
            return settings.max_upload_bytes + uploads.MULTIPART_OVERHEAD_BYTES, "files"
        return settings.max_request_bytes, "body"

    app.add_middleware(BodyLimitMiddleware, limit_for=body_limit)
    app.add_middleware(ControlCharacterMiddleware, routes=lambda: app.routes)
    app.add_middleware(RequestMetricsMiddleware, metrics=api_metrics)  # outermost: sees every answer
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(uploads.router)
    app.include_router(models.router)
    app.include_router(sweeps.router)
    app.include_router(webhooks.router)
    app.include_router(usage.router)
    app.include_router(metrics.router)
    app.include_router(ui.router)
    openapi.install(app)  # each job type's params schema, for clients that validate before submitting
    return app
