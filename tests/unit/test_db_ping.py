"""The pool's pre-ping under CallDeadlines (shared/db/deadlines.py): a connection that dropped during the ping
is reported dead (so the pool opens a new one), even when psycopg's own clean-up hides the disconnect."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import create_engine

from shared.db.deadlines import CallDeadlines


def guarded(ping: Any) -> Any:
    """The engine's pre-ping as CallDeadlines installs it around ``ping`` (no connection is opened)."""
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    engine.dialect.do_ping = ping  # type: ignore[method-assign]
    CallDeadlines(5.0).install(engine)
    return engine.dialect.do_ping


def test_a_drop_hidden_by_the_autocommit_restore_is_a_dead_connection() -> None:
    # Given psycopg's ping: the SELECT fails on a dropped socket, then restoring autocommit raises
    def ping(_conn: Any) -> bool:
        try:
            raise psycopg.OperationalError("connection socket closed")
        finally:
            raise psycopg.ProgrammingError("can't change 'autocommit' now: connection in transaction status ACTIVE")

    # Then the ping says the connection is dead instead of raising
    assert guarded(ping)(object()) is False


def test_other_ping_errors_and_answers_pass_through() -> None:
    def refused(_conn: Any) -> bool:
        raise psycopg.ProgrammingError("a programming error of its own")

    with pytest.raises(psycopg.ProgrammingError, match="of its own"):
        guarded(refused)(object())
    assert guarded(lambda _conn: True)(object()) is True
