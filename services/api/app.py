"""The FastAPI app factory: ``uvicorn services.api.app:create_app --factory``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.bodylimit import BodyLimitMiddleware
from services.api.deps import AppState
from services.api.ratelimit import RateLimiter
from services.api.reads import JobReader
from services.api.routes import health, jobs, uploads
from shared.config import Settings
from shared.db.session import make_engine, make_sessionmaker
from shared.errors import AtelierError
from shared.queue import make_celery
from shared.storage import S3ObjectStore, make_store

log = logging.getLogger(__name__)
RETRY_AFTER_S = "5"

DESCRIPTION = """
Atelier trains GANs and runs neural style transfer as jobs.

Submit a job with `POST /v1/jobs`, poll `GET /v1/jobs/{id}`, read the loss history from
`/metrics` and download outputs from `/artifacts`. Every request needs
`Authorization: Bearer <api key>`.
"""


def _error(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}}, status_code=status, headers=headers
    )


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

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def database_down(_request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        return _error(
            503, "unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": RETRY_AFTER_S}
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; settings default to the environment (ATELIER_*)."""
    settings = settings or Settings()

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
        app.state.atelier = AppState(
            settings=settings,
            sessions=make_sessionmaker(engine),
            store=store,
            celery=make_celery(settings),
            reader=reader,
            limiter=limiter,
        )
        yield
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
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(uploads.router)
    return app
