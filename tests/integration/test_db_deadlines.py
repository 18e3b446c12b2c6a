"""Every database call has a deadline: a connection that goes silent (no reset, no reply) fails
the call within the deadline instead of blocking it for ever, and the engine recovers on new
connections. Real Postgres behind a freezable proxy (tests/support/proxy.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from shared.config import Settings
from shared.db.session import make_engine, make_sessionmaker, transaction
from tests.support import services
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.integration

LEASE_S = 3.0
DEADLINE_S = 2.0  # the worker's deadline at this lease: lease / 3, at least 2 s
MARGIN_S = 3.0  # the watcher's tick, and a loaded host; far below for ever


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    built = TcpProxy(target=services.pg_address(), port=services.free_port()).start()
    yield built
    built.cut()


@pytest.fixture
def engine(proxy: TcpProxy) -> Iterator[Engine]:
    settings = Settings(
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/postgres", lease_s=LEASE_S, heartbeat_s=0.5
    )
    assert settings.db_deadline_s == DEADLINE_S
    built = make_engine(settings, pool_size=1)
    yield built
    built.dispose()


def _select(engine: Engine, sql: str = "SELECT 1") -> object:
    with transaction(make_sessionmaker(engine)) as session:
        return session.execute(text(sql)).scalar()


def test_connections_carry_the_deadline_and_keepalives(engine: Engine) -> None:
    ms = _select(engine, "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")
    assert ms == str(int(DEADLINE_S * 1000))
    with engine.connect() as conn:
        params = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    assert params["keepalives"] == "1"
    assert params["tcp_user_timeout"] == str(int(DEADLINE_S * 1000))
    assert int(params["keepalives_idle"]) <= LEASE_S


def test_a_query_on_a_connection_that_goes_silent_fails_within_its_deadline(engine: Engine, proxy: TcpProxy) -> None:
    assert _select(engine) == 1
    # Given a query in flight when the network goes silent
    threading.Timer(0.5, proxy.freeze).start()
    started = time.monotonic()
    # Then it fails as a dropped connection within its deadline, instead of waiting for ever
    with pytest.raises(OperationalError, match="closed the connection"):
        _select(engine, "SELECT pg_sleep(1.5)")
    assert time.monotonic() - started <= 0.5 + DEADLINE_S + MARGIN_S
    # And once new connections work again, so does the engine
    proxy.thaw()
    assert _select(engine) == 1


def test_a_pooled_connection_that_went_silent_is_replaced_at_checkout(engine: Engine, proxy: TcpProxy) -> None:
    # Given an idle pooled connection that went silent, and a network that works again for new ones
    assert _select(engine) == 1
    assert proxy.freeze() == 1
    proxy.thaw()
    # When the pool hands it out, its pre-ping is cut at the deadline and a new connection serves
    started = time.monotonic()
    assert _select(engine) == 1
    assert DEADLINE_S - 0.2 <= time.monotonic() - started <= DEADLINE_S + MARGIN_S
