"""Request rate limits: token buckets (GCRA) in Redis, shared by every API process.

Two kinds of bucket share the machinery below: one per tenant, charged by every authenticated
request, and one per client address, charged only by failed authentication (an unknown,
revoked or missing API key; see ``FailedAuthLimiter``).

The bucket lives in Redis so every API process shares it. Taking tokens is one EVAL of a
small Lua script that reads the clock of Redis itself (so API hosts need no synchronised
clocks) and grants up to the number asked for, or says how long to wait for one.

The check runs on every authenticated request, the job-polling hot path included, so it is
kept cheap two ways. A process takes tokens a few at a time (at most ``MAX_LEASE_TOKENS``, at
most ``LEASE_S`` worth of the rate, never more than the burst) and spends them locally until
they run out or go stale; the tokens are taken from the shared bucket first, so the global
limit holds and unspent ones only make the limit slightly stricter. And it talks to Redis
over one pipelined connection with a minimal RESP codec: redis-py's asyncio client costs
several times the CPU per command, which showed in the polling benchmark.

If Redis is down the API fails open: requests are served, a warning is logged, and checks
pause for a moment so an outage adds no latency.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import logging
import math
import ssl
import time
import uuid
from typing import cast
from urllib.parse import unquote, urlsplit

from shared.errors import TooManyRequests
from shared.security import hash_key

log = logging.getLogger(__name__)

KEY_PREFIX = "atelier:ratelimit:"  # a tenant's bucket: <prefix><tenant id>
ADDRESS_KEY_PREFIX = "atelier:ratelimit:addr:"  # a client address's failed-authentication bucket
TENANT_REFUSAL = "rate limit exceeded: at most {per_s:g} requests per second per tenant"
ADDRESS_REFUSAL = (
    "too many requests with an unknown, revoked or missing API key from this client address "
    "(at most {per_s:g} per second): its keyed requests are refused until Retry-After"
)
US_PER_S = 1_000_000
REDIS_TIMEOUT_S = 0.25  # a slow Redis must not slow the API: past this, fail open
REDIS_CONNECT_TIMEOUT_S = 1.0
FAIL_OPEN_PAUSE_S = 1.0  # after a Redis error, skip checks this long
MIN_RETRY_AFTER_S = 1
DEFAULT_REDIS_PORT = 6379
CRLF = b"\r\n"

LEASE_S = 0.05  # a process takes at most this much of the rate's tokens at a time...
MAX_LEASE_TOKENS = 10  # ...and at most this many
LOCAL_CREDIT_ENTRIES = 10_000  # tenants with leased tokens held at once, before stale ones are dropped

UNKNOWN_ADDRESS = "unknown"  # requests without a client address share one bucket
MAX_ADDRESS_CHARS = 64  # a host that is not an IP address is kept up to this long
IPV6_NETWORK_BITS = 64  # one IPv6 host commonly holds a whole /64: it counts as one address
ADDRESS_CACHE_ENTRIES = 4096  # parsed client hosts kept per process
BLOCKED_ENTRIES = 10_000  # addresses refused locally at once, before expired ones are dropped
TRUSTED_KEY_ENTRIES = 10_000  # hashes of keys that authenticated in this process, before the set is reset

# GCRA: the key holds the bucket's "theoretical arrival time" (TAT) in microseconds of Redis's
# clock; the bucket is full when TAT <= now and empty when TAT = now + tolerance. Grants
# min(ARGV[3], available) tokens and returns how many; with none available, returns minus
# the microseconds until one is.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local available = math.floor((tolerance - (tat - now)) / interval)
if available < 1 then return -math.max(1, math.ceil(tat + interval - tolerance - now)) end
local granted = math.min(wanted, available)
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return granted
"""


class RedisReplyError(Exception):
    """Redis answered with an error, or with something this codec does not expect."""


def encode_command(*args: bytes) -> bytes:
    """One RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def _expire(future: asyncio.Future[int | str]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("Redis did not answer in time"))


class _RespProtocol(asyncio.Protocol):
    """A pipelined connection: replies (simple strings, integers, errors) resolve futures in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._pending: collections.deque[asyncio.Future[int | str]] = collections.deque()
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        """Resolve one pending future per complete reply line."""
        self._buffer += data
        while (end := self._buffer.find(CRLF)) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + len(CRLF)]
            if not self._pending:
                self._fail(RedisReplyError("unexpected reply from Redis"))
                return
            future = self._pending.popleft()
            if future.done():  # its caller timed out
                continue
            kind, body = line[:1], line[1:]
            if kind == b":":
                future.set_result(int(body))
            elif kind == b"+":
                future.set_result(body.decode())
            elif kind == b"-":
                future.set_exception(RedisReplyError(body.decode(errors="replace")))
            else:
                self._fail(RedisReplyError(f"unexpected reply type {kind!r} from Redis"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail every command still waiting."""
        self.transport = None
        error = ConnectionError(f"Redis connection lost: {exc}" if exc else "Redis connection closed")
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)

    def _fail(self, exc: Exception) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    @property
    def alive(self) -> bool:
        """Whether the connection can take commands."""
        return self.transport is not None and not self.transport.is_closing()

    def send(self, command: bytes, *, timeout_s: float = REDIS_TIMEOUT_S) -> asyncio.Future[int | str]:
        """Write a command; its reply resolves the returned future, or TimeoutError after ``timeout_s``."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("Redis connection closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | str] = loop.create_future()
        # A bare timer is much cheaper per call than asyncio.timeout() on this hot path.
        timer = loop.call_later(timeout_s, _expire, future)
        future.add_done_callback(lambda _f: timer.cancel())
        self._pending.append(future)
        self.transport.write(command)
        return future

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()


class _RedisLink:
    """One pipelined connection to Redis, shared by a process's limiters; an error pauses checks a moment."""

    def __init__(self, redis_url: str) -> None:
        self._url = urlsplit(redis_url)
        self.paused_until = 0.0  # time.monotonic() before which checks are skipped (failing open)
        self._conn: _RespProtocol | None = None
        self._connecting = asyncio.Lock()

    async def eval(self, command: bytes) -> int | None:
        """The integer reply to ``command``, or None when Redis is unavailable (logged; checks pause)."""
        try:
            conn = self._conn if self._conn is not None and self._conn.alive else await self._connection()
            return int(await conn.send(command))
        except (OSError, TimeoutError, RedisReplyError, ValueError) as exc:
            self.paused_until = time.monotonic() + FAIL_OPEN_PAUSE_S
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            log.warning("rate limit not enforced: Redis unavailable (%s: %s)", type(exc).__name__, exc)
            return None

    async def _connection(self) -> _RespProtocol:
        async with self._connecting:
            if self._conn is None or not self._conn.alive:
                self._conn = await asyncio.wait_for(self._connect(), REDIS_CONNECT_TIMEOUT_S)
        return self._conn

    async def _connect(self) -> _RespProtocol:
        url = self._url
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(
            _RespProtocol,
            url.hostname or "127.0.0.1",
            url.port or DEFAULT_REDIS_PORT,
            ssl=ssl.create_default_context() if url.scheme == "rediss" else None,
        )
        try:
            if url.password:
                auth = [unquote(url.username).encode()] if url.username else []
                await conn.send(encode_command(b"AUTH", *auth, unquote(url.password).encode()))
            db = url.path.strip("/")
            if db and db != "0":
                await conn.send(encode_command(b"SELECT", db.encode()))
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RateLimiter:
    """Admit or refuse a subject's request (a tenant, by default): ``per_s`` sustained, up to ``burst`` at once; 0 disables."""

    def __init__(
        self,
        redis_url: str,
        *,
        per_s: float,
        burst: int,
        key_prefix: str = KEY_PREFIX,
        refusal: str = TENANT_REFUSAL,
    ) -> None:
        self.enabled = per_s > 0
        self.per_s = per_s
        interval_us = math.ceil(US_PER_S / per_s) if self.enabled else 0
        self.lease_tokens = max(1, min(burst, MAX_LEASE_TOKENS, math.floor(per_s * LEASE_S)))
        # EVAL <script> 1 <key> <interval> <tolerance> <wanted>: everything but the key is encoded once.
        self._head = b"*7\r\n" + encode_command(b"EVAL", GCRA_SCRIPT.encode(), b"1").split(CRLF, 1)[1]
        self._tail = encode_command(
            str(interval_us).encode(), str(interval_us * burst).encode(), str(self.lease_tokens).encode()
        ).split(CRLF, 1)[1]
        self._redis_url = redis_url
        self._key_prefix = key_prefix
        self._refusal = refusal
        self._link = _RedisLink(redis_url)
        self._credit: dict[uuid.UUID | str, tuple[int, float]] = {}  # subject -> (leased tokens left, stale at)

    def sibling(self, *, per_s: float, burst: int, key_prefix: str, refusal: str) -> RateLimiter:
        """Another limiter (other buckets, other limits) on this one's Redis connection, closed with it."""
        other = RateLimiter(self._redis_url, per_s=per_s, burst=burst, key_prefix=key_prefix, refusal=refusal)
        other._link = self._link
        return other

    def _command(self, subject: uuid.UUID | str) -> bytes:
        key = f"{self._key_prefix}{subject}".encode()
        return b"%s$%d\r\n%s\r\n%s" % (self._head, len(key), key, self._tail)

    def _spend_local(self, subject: uuid.UUID | str, now: float) -> bool:
        credit = self._credit.get(subject)
        if credit is None or credit[0] <= 0 or credit[1] <= now:
            return False
        self._credit[subject] = (credit[0] - 1, credit[1])
        return True

    def _keep_local(self, subject: uuid.UUID | str, tokens: int, now: float) -> None:
        if len(self._credit) >= LOCAL_CREDIT_ENTRIES:
            self._credit = {k: v for k, v in self._credit.items() if v[1] > now and v[0] > 0}
            if len(self._credit) >= LOCAL_CREDIT_ENTRIES:
                self._credit.clear()
        self._credit[subject] = (tokens, now + LEASE_S)

    async def take(self, subject: uuid.UUID | str) -> int:
        """Take a token of ``subject``: 0 if one was free (or the limit is off or not enforced), else microseconds until one is."""
        if not self.enabled:
            return 0
        now = time.monotonic()
        if now < self._link.paused_until or self._spend_local(subject, now):
            return 0
        granted = await self._link.eval(self._command(subject))
        if granted is None:
            return 0
        if granted > 0:
            if granted > 1:
                self._keep_local(subject, granted - 1, time.monotonic())
            return 0
        return -granted

    def refuse(self, wait_us: int) -> TooManyRequests:
        """The 429 for a subject whose bucket has a token again in ``wait_us`` microseconds."""
        retry_after = max(MIN_RETRY_AFTER_S, math.ceil(wait_us / US_PER_S))
        return TooManyRequests(self._refusal.format(per_s=self.per_s), retry_after_s=retry_after)

    async def admit(self, subject: uuid.UUID | str) -> None:
        """Count one request of ``subject``; TooManyRequests with a Retry-After when over the limit."""
        wait_us = await self.take(subject)
        if wait_us:
            raise self.refuse(wait_us)

    async def close(self) -> None:
        """Close the Redis connection (shared with this limiter's siblings)."""
        self._link.close()


@functools.lru_cache(maxsize=ADDRESS_CACHE_ENTRIES)
def client_address(host: str | None) -> str:
    """The bucket of a client host: its IPv4 address, its IPv6 /64, or a non-IP host string as given."""
    if not host:
        return UNKNOWN_ADDRESS
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # e.g. TestClient's "testclient", or a Unix socket's path
        return host[:MAX_ADDRESS_CHARS]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), IPV6_NETWORK_BITS), strict=False))
    return str(ip)


class FailedAuthLimiter:
    """Failed authentication per client address, limited before any key lookup.

    Only failures are charged (an unknown, revoked or missing key), to a bucket per address in
    Redis, so a tenant behind the same NAT as a flood is not slowed while failures are under the
    limit. When a charge finds the bucket empty (that request gets 429), this process refuses the
    address's keyed requests at once, with neither a key lookup nor a Redis call, until the
    bucket has a token again. A key that authenticated in this process before still passes (and
    is looked up as usual), so a tenant that was polling keeps being served during a flood from
    its address; a key this process has not seen waits like the flood. Fails open with Redis.
    """

    def __init__(self, bucket: RateLimiter) -> None:
        self._bucket = bucket
        self._blocked: dict[str, float] = {}  # address -> time.monotonic() when its bucket has a token again
        self._trusted: set[str] = set()  # hashes of keys that authenticated in this process

    @classmethod
    def beside(cls, limiter: RateLimiter, *, per_s: float, burst: int) -> FailedAuthLimiter:
        """Buckets of ``per_s`` failures a second (``burst`` at once; 0 disables) on ``limiter``'s Redis connection."""
        return cls(limiter.sibling(per_s=per_s, burst=burst, key_prefix=ADDRESS_KEY_PREFIX, refusal=ADDRESS_REFUSAL))

    def check(self, host: str | None, raw_key: str | None) -> None:
        """Before the key lookup: TooManyRequests if ``host`` is over its limit and the key has not authenticated here."""
        if not self._blocked:
            return
        address = client_address(host)
        until = self._blocked.get(address)
        if until is None:
            return
        now = time.monotonic()
        if until <= now:
            del self._blocked[address]
            return
        if raw_key is not None and self._trusted and hash_key(raw_key) in self._trusted:
            return
        raise self._bucket.refuse(math.ceil((until - now) * US_PER_S))

    async def failed(self, host: str | None, raw_key: str | None) -> None:
        """After a failed lookup, or without a key: charge ``host``; TooManyRequests if its bucket was empty."""
        if raw_key is not None and self._trusted:
            self._trusted.discard(hash_key(raw_key))
        address = client_address(host)
        wait_us = await self._bucket.take(address)
        if not wait_us:
            return
        now = time.monotonic()
        if len(self._blocked) >= BLOCKED_ENTRIES:
            self._blocked = {k: v for k, v in self._blocked.items() if v > now}
            if len(self._blocked) >= BLOCKED_ENTRIES:
                self._blocked.clear()
        self._blocked[address] = now + wait_us / US_PER_S
        raise self._bucket.refuse(wait_us)

    def succeeded(self, raw_key: str) -> None:
        """The key authenticated: from now on it passes even while its address is over the limit."""
        if not self._bucket.enabled:
            return
        key_hash = hash_key(raw_key)
        if key_hash in self._trusted:
            return
        if len(self._trusted) >= TRUSTED_KEY_ENTRIES:
            self._trusted.clear()
        self._trusted.add(key_hash)
