"""A client-side deadline on every database call.

libpq waits for ever for a reply that never comes: a connection that goes silent instead of
being reset (a NAT or load-balancer idle drop, a failover, a proxy that stops forwarding)
blocks the calling thread in ``Connection.wait``. Server-side ``statement_timeout`` cannot
help when the server never saw the query, and TCP keepalives cannot when something in the
middle still acknowledges packets. So a watcher thread holds the start time of each call in
flight and, once one outlives its deadline, shuts the connection's socket down. The blocked
call then fails at once as a dropped connection, which SQLAlchemy invalidates and the
caller's retry replaces.

Calls are armed by engine events: every statement, commit and rollback, the pool's rollback
on return, and its pre-ping, which runs outside the statement events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger(__name__)

WATCH_TICK_S = 0.1


class CallDeadlines:
    """Arms a deadline per DBAPI connection in use; shuts the socket of one that outlives it."""

    def __init__(self, deadline_s: float, *, name: str = "db") -> None:
        self.deadline_s = deadline_s
        self.name = name
        self.expired = 0  # calls cut so far (read by tests and logs)
        self._armed: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, dbapi_conn: Any) -> None:
        """A call on ``dbapi_conn`` starts now."""
        with self._lock:
            self._armed[id(dbapi_conn)] = (time.monotonic() + self.deadline_s, dbapi_conn)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name=f"{self.name}-deadlines", daemon=True)
                self._thread.start()

    def disarm(self, dbapi_conn: Any) -> None:
        """The call on ``dbapi_conn`` is over."""
        with self._lock:
            self._armed.pop(id(dbapi_conn), None)

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_TICK_S)
            now = time.monotonic()
            with self._lock:
                due = [(key, conn) for key, (at, conn) in self._armed.items() if at <= now]
                for key, _conn in due:
                    del self._armed[key]
            for _key, conn in due:
                self._cut(conn)

    def _cut(self, dbapi_conn: Any) -> None:
        if getattr(dbapi_conn, "closed", True):
            return
        try:
            fd = dbapi_conn.fileno()
        except Exception:  # closed meanwhile
            return
        self.expired += 1
        log.warning("%s call outlived its %.1fs deadline; dropping its connection", self.name, self.deadline_s)
        # shutdown() acts on the socket, not on this descriptor: the blocked poll() wakes with EOF.
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)

    def install(self, engine: Engine) -> None:
        """Arm on every statement, commit, rollback and pre-ping of ``engine``'s connections."""

        def arm_cursor(conn: Any, _cursor: Any, *_args: Any) -> None:
            self.arm(conn.connection.dbapi_connection)

        def disarm_cursor(conn: Any, _cursor: Any, *_args: Any) -> None:
            self.disarm(conn.connection.dbapi_connection)

        def arm_tx(conn: Any) -> None:
            if conn.invalidated:  # a dropped connection: its rollback touches no socket
                return
            self.arm(conn.connection.dbapi_connection)

        def disarm_pooled(dbapi_conn: Any, *_args: Any) -> None:
            self.disarm(dbapi_conn)

        event.listen(engine, "before_cursor_execute", arm_cursor)
        event.listen(engine, "after_cursor_execute", disarm_cursor)
        event.listen(engine, "handle_error", lambda ctx: self._disarm_context(ctx))
        event.listen(engine, "commit", arm_tx)
        event.listen(engine, "rollback", arm_tx)
        event.listen(engine.pool, "reset", self._arm_pooled)
        for name in ("checkin", "close", "invalidate", "soft_invalidate", "close_detached"):
            event.listen(engine.pool, name, disarm_pooled)
        self._wrap_ping(engine)

    def _arm_pooled(self, dbapi_conn: Any, *_args: Any) -> None:
        self.arm(dbapi_conn)  # the pool's rollback on return; checkin disarms

    def _disarm_context(self, ctx: Any) -> None:
        with contextlib.suppress(Exception):  # an invalidated connection has no DBAPI connection left
            self.disarm(ctx.connection.connection.dbapi_connection)

    def _wrap_ping(self, engine: Engine) -> None:
        dialect = engine.dialect
        do_ping = dialect.do_ping
        dbapi = dialect.loaded_dbapi

        def guarded_ping(dbapi_connection: Any) -> bool:
            self.arm(dbapi_connection)
            try:
                return bool(do_ping(dbapi_connection))
            except dbapi.ProgrammingError as exc:
                # psycopg's ping restores autocommit in a `finally`: when the SELECT itself failed
                # because the connection dropped (a cut socket, a restart), that restore raises "can't
                # change 'autocommit' now" and hides the disconnect, which SQLAlchemy would otherwise
                # have answered with a fresh connection. Say what the ping found: a dead connection.
                if isinstance(exc.__context__, dbapi.OperationalError):
                    log.info("pre-ping: the connection dropped (%s)", exc.__context__)
                    return False
                raise
            finally:
                self.disarm(dbapi_connection)

        dialect.do_ping = guarded_ping  # type: ignore[method-assign]
