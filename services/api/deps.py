"""FastAPI dependencies as ``Annotated`` aliases: settings, DB session, store, queue, caller."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.api.events import EventHub
from services.api.metrics import ApiMetrics
from services.api.ratelimit import FailedAuthLimiter, RateLimiter
from services.api.reads import JobReader
from shared.config import Settings
from shared.db import queries
from shared.errors import InvalidInput, Unauthorized
from shared.storage import ObjectStore


@dataclass
class AppState:
    """Everything built once in the lifespan and shared by requests."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    celery: Celery
    reader: JobReader
    limiter: RateLimiter
    hub: EventHub
    metrics: ApiMetrics
    auth_failures: FailedAuthLimiter = field(init=False)

    def __post_init__(self) -> None:
        """Build the per-address limit on failed authentication, on the tenant limiter's Redis connection."""
        self.auth_failures = FailedAuthLimiter.beside(
            self.limiter, per_s=self.settings.unknown_key_rate_per_s, burst=self.settings.unknown_key_burst
        )


async def get_state(request: Request) -> AppState:
    """The app's shared state."""
    state: AppState = request.app.state.atelier
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    """The app's settings."""
    return state.settings


def get_session(state: StateDep) -> Iterator[Session]:
    """One session per request; handlers that write commit explicitly, the rest roll back."""
    with state.sessions() as session:
        yield session


async def get_store(state: StateDep) -> ObjectStore:
    """The object store."""
    return state.store


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]

bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer atl_…`")


async def get_bearer_key(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> AsyncIterator[str]:
    """The raw bearer key, unchecked (the caller checks it in its own query); 401 if absent, 429 if its address floods."""
    # Failed authentication is limited per client address (uvicorn puts X-Forwarded-For here only
    # from --forwarded-allow-ips). The check comes before any key lookup; a 401 raised later in
    # the request, by get_authenticated_tenant or by the polling route's own query, comes back
    # through the yield and is charged to the address.
    guard = state.auth_failures
    host = request.client.host if request.client is not None else None
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        guard.check(host, None)
        await guard.failed(host, None)
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    raw_key = credentials.credentials
    guard.check(host, raw_key)
    try:
        yield raw_key
    except Unauthorized:
        await guard.failed(host, raw_key)
        raise
    guard.succeeded(raw_key)  # the request completed: the key was found (the polling route's case)


BearerKeyDep = Annotated[str, Depends(get_bearer_key)]


def get_authenticated_tenant(state: StateDep, raw_key: BearerKeyDep, session: SessionDep) -> uuid.UUID:
    """The tenant of the presented API key; 401 without a live key."""
    tenant_id = queries.authenticate(session, raw_key=raw_key)
    if tenant_id is None:
        raise Unauthorized("invalid or revoked API key")
    state.auth_failures.succeeded(raw_key)
    return tenant_id


async def get_tenant(state: StateDep, tenant_id: Annotated[uuid.UUID, Depends(get_authenticated_tenant)]) -> uuid.UUID:
    """The authenticated tenant, after counting the request against its rate limit (429 over it)."""
    await state.limiter.admit(tenant_id)
    return tenant_id


TenantDep = Annotated[uuid.UUID, Depends(get_tenant)]


def check_page_limit(limit: int, settings: Settings) -> None:
    """A listing's ``limit`` may not pass ``page_size_max`` (422 naming ``limit``)."""
    if limit > settings.page_size_max:
        raise InvalidInput(f"limit: at most {settings.page_size_max}", field="limit")
