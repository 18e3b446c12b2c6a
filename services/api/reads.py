"""The hot read path: polling a job. Authentication and the tenant-scoped job read are one
prepared asyncpg query on the event loop, with no threadpool hop and no ORM; everything
else in the API goes through SQLAlchemy and shared/db/queries/api.py."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import types
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from shared.db.queries.events import Event
from shared.errors import NotFound, ServiceUnavailable, Unauthorized
from shared.jobs.states import JobState
from shared.security import hash_key

log = logging.getLogger(__name__)

POOL_MIN = 1
POOL_MAX = 10
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
CACHE_ENTRIES = 10_000
READ_ATTEMPTS = 2
# What a pooled connection the server dropped can raise on its next use: a closed socket
# (OSError, ConnectionDoesNotExistError), the server's FATAL "terminating connection" itself
# (AdminShutdownError, an OperatorInterventionError), or, when that message was read but
# the close not yet seen, asyncpg's InternalClientError ("cannot switch to state ...").
CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
)

# One round trip: a live key's tenant, and that tenant's job if it has one with this id.
# No key row -> 401; a key row without a job (or with one being deleted) -> 404 (never a 403 that confirms the
# id exists).
JOB_FOR_KEY = """
SELECT k.tenant_id AS key_tenant, j.*
FROM api_keys AS k
LEFT JOIN jobs AS j ON j.id = $2 AND j.tenant_id = k.tenant_id AND j.deleted_at IS NULL
WHERE k.key_hash = $1 AND k.revoked_at IS NULL
"""

EVENTS_AFTER = "SELECT seq, type, data FROM job_events WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
EVENT_PAGE = 1000


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Decode jsonb columns (params, metrics, warnings) as Python objects, like SQLAlchemy does."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def asyncpg_dsn(database_url: str) -> str:
    """The libpq-style DSN asyncpg wants, from our SQLAlchemy URL."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class JobReader:
    """A lazily created asyncpg pool serving the job-polling read, with a micro-cache.

    Clients poll status many times a second while a job's row changes at most once per
    heartbeat, so a read is reused for ``cache_s`` (per key and job; 0 disables it). Writes
    made through this process (cancel) drop the job's entries at once.
    """

    def __init__(self, database_url: str, *, cache_s: float = 0.0, cache_entries: int = CACHE_ENTRIES) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._cache_s = cache_s
        self._cache_entries = cache_entries
        # (key hash, job id) -> (expires at, the key's tenant, rendered job)
        self._cache: dict[tuple[str, uuid.UUID], tuple[float, uuid.UUID, bytes]] = {}
        self._inflight: dict[tuple[str, uuid.UUID], asyncio.Future[Any]] = {}

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=POOL_MIN,
                        max_size=POOL_MAX,
                        timeout=CONNECT_TIMEOUT_S,
                        command_timeout=COMMAND_TIMEOUT_S,
                        init=_init_connection,
                    )
        return self._pool

    def forget(self, job_id: uuid.UUID) -> None:
        """Drop cached reads of a job (after this process changed it)."""
        for entry in [k for k in self._cache if k[1] == job_id]:
            self._cache.pop(entry, None)

    async def job_for_key(
        self,
        raw_key: str,
        job_id: uuid.UUID,
        render: Callable[[types.SimpleNamespace], bytes],
        admit: Callable[[uuid.UUID], Awaitable[None]] | None = None,
        render_queued: Callable[[types.SimpleNamespace], Awaitable[bytes]] | None = None,
    ) -> bytes:
        """The caller's job, rendered; Unauthorized, NotFound or ServiceUnavailable.

        ``admit`` is awaited with the key's tenant before any answer about the job, cached or
        not (the rate limit), so neither cache hits nor 404s escape it. A queued job is rendered by
        ``render_queued`` when given (its place in the queue is read then) and is not cached.
        """
        key_hash = hash_key(raw_key)
        now = time.monotonic()
        hit = self._cache.get((key_hash, job_id))
        if hit is not None and hit[0] > now:
            if admit is not None:
                await admit(hit[1])
            return hit[2]
        row = await self._read_shared(key_hash, job_id)
        tenant_id: uuid.UUID = row["key_tenant"]
        if admit is not None:
            await admit(tenant_id)
        if row["id"] is None:
            raise NotFound(f"job {job_id} not found")
        found = types.SimpleNamespace(**dict(row))
        if render_queued is not None and found.state == JobState.QUEUED.value:
            return await render_queued(found)
        job = render(found)
        if self._cache_s > 0:
            if len(self._cache) >= self._cache_entries:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= self._cache_entries:
                    self._cache.clear()
            self._cache[(key_hash, job_id)] = (now + self._cache_s, tenant_id, job)
        return job

    async def _read_shared(self, key_hash: str, job_id: uuid.UUID) -> Any:
        """One database read per (key, job) at a time: concurrent misses wait for it.

        Without this, when an entry expires under a backlog every queued poll reads the
        database, and the backlog grows.
        """
        entry = (key_hash, job_id)
        pending = self._inflight.get(entry)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[entry] = future
        try:
            row = await self._read(key_hash, job_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
            raise
        else:
            future.set_result(row)
            return row
        finally:
            self._inflight.pop(entry, None)

    async def job_row(
        self, raw_key: str, job_id: uuid.UUID, admit: Callable[[uuid.UUID], Awaitable[None]] | None = None
    ) -> types.SimpleNamespace:
        """The caller's job row, read now (no cache); Unauthorized, NotFound or ServiceUnavailable."""
        row = await self._read(hash_key(raw_key), job_id)
        if admit is not None:
            await admit(row["key_tenant"])
        if row["id"] is None:
            raise NotFound(f"job {job_id} not found")
        return types.SimpleNamespace(**dict(row))

    async def events_after(self, job_id: uuid.UUID, after: int, *, limit: int = EVENT_PAGE) -> list[Event]:
        """A job's logged events with ids above ``after``, oldest first (at most ``limit``)."""
        rows = await self._fetch(EVENTS_AFTER, job_id, after, limit, what="an event read")
        return [Event(job_id=job_id, seq=r["seq"], type=r["type"], data=r["data"]) for r in rows]

    async def _read(self, key_hash: str, job_id: uuid.UUID) -> Any:
        """The key's tenant and job row; Unauthorized for an unknown or revoked key."""
        rows = await self._fetch(JOB_FOR_KEY, key_hash, job_id, what="a job read")
        if not rows:
            raise Unauthorized("invalid or revoked API key")
        return rows[0]

    async def _fetch(self, query: str, *args: Any, what: str) -> list[Any]:
        """Rows, retried once on fresh connections: after a database restart every pooled
        connection is dead, and the first use of each is what finds out."""
        for attempt in range(READ_ATTEMPTS):
            try:
                pool = await self._get_pool()
                return list(await pool.fetch(query, *args))
            except CONNECTION_ERRORS as exc:
                if attempt + 1 < READ_ATTEMPTS and self._pool is not None:
                    await self._pool.expire_connections()
                    continue
                log.warning("database unavailable for %s: %s", what, type(exc).__name__)
                raise ServiceUnavailable("the database is unavailable; retry shortly") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Close the pool, if it was opened."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
