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


def make_engine(settings: Settings, *, pool_size: int = POOL_SIZE, idle_tx_timeout_s: float | None = None) -> Engine:
    """A pooled engine that notices dead connections (Postgres restarts).

    ``idle_tx_timeout_s`` makes Postgres end a session that sits inside a transaction
    that long (a frozen process), releasing its row locks.
    """
    connect_args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_S}
    if idle_tx_timeout_s is not None:
        connect_args["options"] = f"-c idle_in_transaction_session_timeout={int(idle_tx_timeout_s * 1000)}"
    return create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=POOL_OVERFLOW,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory; sessions don't expire objects on commit (we return them to callers)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session inside one transaction: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session
