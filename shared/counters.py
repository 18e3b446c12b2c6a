"""Event counters kept in one Redis hash (``atelier:counters``), shared by every process: the
workers count what an operator should see (watchdog stops and exits); ``atelier-admin counters``
prints them. Best effort and bounded: counting never blocks or fails the caller."""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)

COUNTERS_KEY = "atelier:counters"


def _client(redis_url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def increment(redis_url: str, name: str, *, timeout_s: float) -> None:
    """Add one to counter ``name``; logs instead of raising when Redis is unreachable."""
    try:
        with _client(redis_url, timeout_s) as client:
            client.hincrby(COUNTERS_KEY, name, 1)
    except redis.RedisError as exc:
        log.warning("could not count %s: %s", name, exc)


def read_all(redis_url: str, *, timeout_s: float) -> dict[str, int]:
    """Every counter and its value."""
    with _client(redis_url, timeout_s) as client:
        return {name.decode(): int(value) for name, value in client.hgetall(COUNTERS_KEY).items()}
