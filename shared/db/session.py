"""Engine and session factories, built from Settings at each entry point."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.config import KEEPALIVE_PROBES, Settings
from shared.db.deadlines import CallDeadlines

POOL_SIZE = 10
POOL_OVERFLOW = 20
CONNECT_TIMEOUT_S = 5
POOL_RECYCLE_S = 1800  # replace pooled connections before a middlebox's idle timer can drop them


def make_engine(
    settings: Settings,
    *,
    pool_size: int = POOL_SIZE,
    idle_tx_timeout_s: float | None = None,
    call_deadline_s: float | None = None,
) -> Engine:
    """A pooled engine that notices dead connections (Postgres restarts) and silent ones.

    Every call has a deadline: ``call_deadline_s`` (default: the worker's, from the lease) on the
    client side (shared/db/deadlines.py) and as the server's ``statement_timeout``; TCP keepalives
    and ``tcp_user_timeout`` drop a connection whose peer went away without a reset.
    ``idle_tx_timeout_s`` makes Postgres end a session that sits inside a transaction that long
    (a frozen process), releasing its row locks.
    """
    deadline_s = call_deadline_s or settings.db_deadline_s
    options = [f"-c statement_timeout={int(deadline_s * 1000)}"]
    if idle_tx_timeout_s is not None:
        options.append(f"-c idle_in_transaction_session_timeout={int(idle_tx_timeout_s * 1000)}")
    idle = settings.keepalive_idle_s
    connect_args: dict[str, object] = {
        "connect_timeout": max(CONNECT_TIMEOUT_S, int(deadline_s)),
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": max(1, idle // 2),
        "keepalives_count": KEEPALIVE_PROBES,
        "tcp_user_timeout": int(deadline_s * 1000),
        "options": " ".join(options),
    }
    engine = create_engine(
        settings.database_url,
        pool_size=pool_size,
        max_overflow=POOL_OVERFLOW,
        pool_pre_ping=True,
        pool_recycle=POOL_RECYCLE_S,
        pool_timeout=deadline_s,
        connect_args=connect_args,
    )
    CallDeadlines(deadline_s).install(engine)
    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Session factory; sessions don't expire objects on commit (we return them to callers)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session inside one transaction: commit on success, roll back on error."""
    with factory() as session, session.begin():
        yield session
