"""Engine and session factories, built from Settings at each entry point."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings

POOL_SIZE = 10
POOL_OVERFLOW = 20
CONNECT_TIMEOUT_S = 5


def make_engine(settings: Settings, *, pool_size: int = POOL_SIZE) -> Engine:
    """A pooled engine that notices dead connections (Postgres restarts)."""
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=POOL_OVERFLOW,
        pool_pre_ping=True,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory; sessions don't expire objects on commit (we return them to callers)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session inside one transaction: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session
