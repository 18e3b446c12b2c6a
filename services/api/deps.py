"""FastAPI dependencies as ``Annotated`` aliases: settings, DB session, store, queue, caller."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from services.api.ratelimit import RateLimiter
from services.api.reads import JobReader
from shared.config import Settings
from shared.db import queries
from shared.errors import Unauthorized
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
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The raw bearer key, unchecked (the caller checks it in its own query); 401 if absent."""
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    return credentials.credentials


BearerKeyDep = Annotated[str, Depends(get_bearer_key)]


def get_authenticated_tenant(session: SessionDep, raw_key: BearerKeyDep) -> uuid.UUID:
    """The tenant of the presented API key; 401 without a live key."""
    tenant_id = queries.authenticate(session, raw_key=raw_key)
    if tenant_id is None:
        raise Unauthorized("invalid or revoked API key")
    return tenant_id


async def get_tenant(state: StateDep, tenant_id: Annotated[uuid.UUID, Depends(get_authenticated_tenant)]) -> uuid.UUID:
    """The authenticated tenant, after counting the request against its rate limit (429 over it)."""
    await state.limiter.admit(tenant_id)
    return tenant_id


TenantDep = Annotated[uuid.UUID, Depends(get_tenant)]
