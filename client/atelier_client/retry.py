"""When to try a request again, and for how long: retries on 429, 503 and connection errors,
honouring ``Retry-After``, else exponential backoff with jitter and a cap, all within one total
deadline. The decisions are pure; the sync and async clients only sleep as they are told."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from atelier_client.errors import ConnectionFailed, WaitTimeout, error_from_response

RETRY_STATUSES = frozenset({429, 503})
DEFAULT_BASE_DELAY_S = 0.5
DEFAULT_MAX_DELAY_S = 30.0
DEFAULT_DEADLINE_S = 120.0
DEFAULT_JITTER = 0.5  # a backoff delay is drawn from [(1 - jitter) * d, d]
MS_PER_S = 1000.0

# Errors raised before any byte of the request reached the server: safe to retry any request.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Errors after the request may have been processed: retried only for idempotent requests.
AMBIGUOUS_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a client retries: backoff from ``base_delay_s`` doubling up to ``max_delay_s``, and never
    past ``deadline_s`` after the first try. ``clock`` and the sleeps can be swapped in tests."""

    base_delay_s: float = DEFAULT_BASE_DELAY_S
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    deadline_s: float = DEFAULT_DEADLINE_S
    jitter: float = DEFAULT_JITTER
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = field(default=random.random, repr=False)

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that tries every request once."""
        return cls(deadline_s=0.0)

    def start(self) -> RetryState:
        """The retry budget of one request, starting now."""
        return RetryState(self)


class RetryState:
    """One request's retries: how many failed so far and when the first try started."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.started = policy.clock()

    def remaining_s(self) -> float:
        """Seconds left before the deadline."""
        return self.policy.deadline_s - (self.policy.clock() - self.started)

    def backoff_s(self) -> float:
        """The next exponential delay, with jitter."""
        policy = self.policy
        ceiling = min(policy.max_delay_s, policy.base_delay_s * 2 ** max(self.failures - 1, 0))
        return ceiling * (1.0 - policy.jitter * policy.random())

    def delay_s(self, *, retry_after_s: float | None = None, floor_s: float = 0.0) -> float | None:
        """Count a failure; the seconds to wait before the next try, or None when that would pass the deadline."""
        self.failures += 1
        wait = retry_after_s if retry_after_s is not None else max(self.backoff_s(), floor_s)
        return wait if wait <= self.remaining_s() else None

    def after_error(self, exc: httpx.TransportError, *, idempotent: bool, url: str) -> float:
        """The delay before retrying after a transport error; raises ConnectionFailed when it must not retry."""
        retryable = isinstance(exc, NOT_SENT_ERRORS) or (idempotent and isinstance(exc, AMBIGUOUS_ERRORS))
        delay = self.delay_s() if retryable else None
        if delay is None:
            tries = f" after {self.failures} tries" if self.failures > 1 else ""
            raise ConnectionFailed(f"no answer from {url}{tries}: {type(exc).__name__}: {exc}") from exc
        return delay

    def after_response(self, response: httpx.Response) -> float:
        """The delay before retrying an error answer (429 or 503); raises its APIError when it must not retry.

        The answer's body must have been read.
        """
        error = error_from_response(response)
        delay = self.delay_s(retry_after_s=error.retry_after_s) if response.status_code in RETRY_STATUSES else None
        if delay is None:
            raise error
        return delay

    def after_drop(self, *, retry_ms: int | None, url: str, error: Exception | None = None) -> float:
        """The delay before reconnecting a stream that ended early; raises ConnectionFailed when out of time."""
        floor = retry_ms / MS_PER_S if retry_ms is not None else 0.0
        delay = self.delay_s(floor_s=floor)
        if delay is None:
            reason = f": {type(error).__name__}: {error}" if error is not None else ""
            raise ConnectionFailed(f"the stream from {url} kept dropping ({self.failures} times){reason}")
        return delay


class Deadline:
    """An optional point in time (for ``wait(timeout=…)``): how long is left, and a check that raises."""

    def __init__(self, timeout_s: float | None, *, clock: Callable[[], float], what: str) -> None:
        self.clock = clock
        self.what = what
        self.at = None if timeout_s is None else clock() + timeout_s

    def remaining_s(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        return None if self.at is None else max(self.at - self.clock(), 0.0)

    def cap(self, seconds: float) -> float:
        """``seconds``, or less when the deadline is nearer."""
        left = self.remaining_s()
        return seconds if left is None else min(seconds, left)

    def check(self) -> None:
        """Raise WaitTimeout once the deadline has passed."""
        if self.at is not None and self.clock() >= self.at:
            raise WaitTimeout(f"{self.what} did not finish in time")
