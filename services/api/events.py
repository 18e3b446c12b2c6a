"""Live job events in an API process: one Redis pub/sub connection fanned out to local streams.

``EventHub`` keeps a single subscription per API process. A job's channel is subscribed while at
least one local stream (an SSE client, or a ``Prefer: wait`` submit) watches that job, and each
message is handed to every local watcher's bounded queue. Nothing here reads Postgres: a watcher
that may have missed events (its queue overflowed, or the Redis connection was lost and remade)
gets ``RESYNC``, and the stream rebuilds what it missed from the job's event log by event id
(services/api/routes/events.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.db.queries.events import Event, decode_batch
from shared.events import channel_of, job_id_of_channel

log = logging.getLogger(__name__)

QUEUE_SIZE = 256  # events a slow stream may fall behind before it must catch up from Postgres
PING_EVERY_S = 5.0
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 2.0
SUBSCRIBE_WAIT_S = 2.0
READ_TIMEOUT_S = 1.0


class _Resync:
    """Marker: events may have been missed; read the log from the last id sent."""


RESYNC: Final = _Resync()


Batch = tuple[Event, ...]  # one job's events of one commit, as published together


class Watch:
    """One local watcher of one job: a bounded queue of event batches (or RESYNC)."""

    def __init__(self, job_id: uuid.UUID, *, size: int = QUEUE_SIZE) -> None:
        self.job_id = job_id
        self._queue: asyncio.Queue[Batch | _Resync] = asyncio.Queue(maxsize=size)
        self._overflowed = False

    def put(self, item: Batch | _Resync) -> None:
        """Hand over a batch; on overflow drop it and make the next get() a RESYNC."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._overflowed = True

    async def get(self, *, timeout: float) -> Batch | _Resync | None:
        """The next batch, RESYNC, or None after ``timeout`` seconds of nothing."""
        if self._overflowed:
            self._overflowed = False
            while not self._queue.empty():
                self._queue.get_nowait()
            return RESYNC
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            pass
        try:  # asyncio.timeout, not wait_for: on 3.11 wait_for wraps every get in a new Task
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            return None


class EventHub:
    """The process's Redis subscription to job events (see the module docstring)."""

    def __init__(self, redis_url: str, *, timeout_s: float) -> None:
        self._url = redis_url
        self._timeout_s = timeout_s
        self._watchers: dict[uuid.UUID, set[Watch]] = {}
        self._subscribed: dict[str, asyncio.Event] = {}  # channel -> confirmed on the live connection
        self._pubsub: aioredis.client.PubSub | None = None
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._own_channel = f"atelier:hub:{uuid.uuid4().hex}"  # keeps the connection in subscribe mode
        self.reconnects = 0

    def watching(self) -> int:
        """How many local watchers there are (for tests and metrics)."""
        return sum(len(w) for w in self._watchers.values())

    @contextlib.asynccontextmanager
    async def watch(self, job_id: uuid.UUID) -> AsyncIterator[Watch]:
        """Watch one job's events; subscribed (when Redis answers) before this yields."""
        self._ensure_running()
        watch = Watch(job_id)
        channel = channel_of(job_id)
        watchers = self._watchers.setdefault(job_id, set())
        watchers.add(watch)
        confirmed = self._subscribed.setdefault(channel, asyncio.Event())
        if len(watchers) == 1:
            await self._send_subscribe(channel)
        try:
            # Redis down: go on; the reconnect subscribes again and sends RESYNC.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_WAIT_S)
            yield watch
        finally:
            watchers.discard(watch)
            if not watchers:
                self._watchers.pop(job_id, None)
                self._subscribed.pop(channel, None)
                await self._send(lambda p: p.unsubscribe(channel))

    async def _send_subscribe(self, channel: str) -> None:
        await self._send(lambda p: p.subscribe(channel))

    async def _send(self, command: object) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            await asyncio.wait_for(command(pubsub), self._timeout_s)  # type: ignore[operator]
        except (RedisError, OSError, TimeoutError) as exc:  # the reader notices and reconnects
            log.debug("event hub: command failed: %s", exc)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-hub")

    async def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        first = True
        while True:
            try:
                await self._connect()
                if not first:
                    self.reconnects += 1
                    self._resync_all()  # whatever was published while we were away is in Postgres
                first = False
                delay = RECONNECT_FIRST_S
                await self._read()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, ConnectionError) as exc:
                log.warning("event hub: Redis connection lost (%s); reconnecting", exc)
            await self._disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _connect(self) -> None:
        self._client = aioredis.Redis.from_url(self._url, socket_connect_timeout=self._timeout_s, socket_keepalive=True)
        self._pubsub = self._client.pubsub()
        channels = [self._own_channel, *(channel_of(j) for j in self._watchers)]
        await asyncio.wait_for(self._pubsub.subscribe(*channels), self._timeout_s)

    async def _disconnect(self) -> None:
        for event in self._subscribed.values():
            event.clear()
        pubsub, client, self._pubsub, self._client = self._pubsub, self._client, None, None
        with contextlib.suppress(Exception):
            if pubsub is not None:
                await pubsub.aclose()
        with contextlib.suppress(Exception):
            if client is not None:
                await client.aclose()

    async def _read(self) -> None:
        """Dispatch messages until the connection fails or stops answering pings."""
        assert self._pubsub is not None
        loop = asyncio.get_running_loop()
        last_ping = last_pong = loop.time()
        while True:
            message = await self._pubsub.get_message(timeout=READ_TIMEOUT_S)
            now = loop.time()
            if message is not None:
                self._dispatch(message)
                if message["type"] == "pong":
                    last_pong = now
            if now - last_ping >= PING_EVERY_S:
                await asyncio.wait_for(self._pubsub.ping(), self._timeout_s)
                last_ping = now
            if now - last_pong > PING_EVERY_S + 2 * self._timeout_s:
                raise ConnectionError(f"no answer to a ping for {now - last_pong:.0f}s")

    def _dispatch(self, message: dict[str, object]) -> None:
        kind = message["type"]
        channel = message.get("channel")
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "subscribe":
            confirmed = self._subscribed.get(name)
            if confirmed is not None:
                confirmed.set()
            return
        if kind != "message":
            return
        job_id = job_id_of_channel(name)
        watchers = self._watchers.get(job_id) if job_id is not None else None
        if not watchers:
            return
        try:
            batch = tuple(decode_batch(message["data"]))  # type: ignore[arg-type]
        except (ValueError, KeyError, TypeError):
            log.warning("event hub: dropping a malformed message on %s", name)
            return
        if not batch:
            return
        for watch in list(watchers):
            watch.put(batch)

    def _resync_all(self) -> None:
        for watchers in self._watchers.values():
            for watch in watchers:
                watch.put(RESYNC)

    async def close(self) -> None:
        """Stop reading and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._disconnect()


EventLoader = Callable[[uuid.UUID, int], Awaitable[list[Event]]]


async def follow(
    hub: EventHub, job_id: uuid.UUID, *, after: int, load: EventLoader, page: int, idle_s: float
) -> AsyncGenerator[list[Event] | None, None]:
    """Every event of a job after id ``after``, in order and each once, ending with ``done``.

    Subscribes first, then replays the log from Postgres (``load`` returns at most ``page`` events
    after an id), then follows the live channel. Only a gap in the ids, an overflow or a Redis
    reconnect makes it read the log again, from the last id it gave. Events come in batches (a
    page of the log, or what one commit published), so a stream writes each batch at once. Yields
    None after ``idle_s`` without an event, so the caller can send a heartbeat or check a deadline.
    """
    last = after
    async with hub.watch(job_id) as watch:
        replay = True
        while True:
            if replay:
                replay = False
                async for batch in _replay(job_id, last, load, page):
                    yield batch
                    last = batch[-1].seq
                    if batch[-1].type == "done":
                        return
            item = await watch.get(timeout=idle_s)
            if item is None:
                yield None
                continue
            if isinstance(item, _Resync):
                replay = True
                continue
            fresh: list[Event] = []
            for event in item:
                if event.seq > last + 1:  # something was lost on the way: the log has it
                    replay = True
                    break
                if event.seq == last + 1:
                    fresh.append(event)
                    last = event.seq
            if fresh:
                yield fresh
                if fresh[-1].type == "done":
                    return


async def _replay(job_id: uuid.UUID, after: int, load: EventLoader, page: int) -> AsyncIterator[list[Event]]:
    """The logged events after ``after``, page by page (no empty pages)."""
    while True:
        batch = await load(job_id, after)
        if batch:
            yield batch
            after = batch[-1].seq
        if len(batch) < page or batch[-1].type == "done":
            return
