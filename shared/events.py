"""Publishing job events after their transaction commits (docs/DESIGN.md, "Job events").

shared/db/queries/events.py writes each event to Postgres (the truth) and notes it in the
session; ``EventPublisher``, installed on a session factory, publishes what committed on the
job's Redis pub/sub channel and hands new webhook deliveries to the ``cpu`` queue. Both are
best effort: a Redis that is down loses only the live notification. API processes rebuild what
a stream missed from Postgres (by event id), and the reconciler re-sends deliveries whose message
never left.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db.queries.events import PENDING_DELIVERIES, PENDING_EVENTS, Event, encode_batch

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "atelier:events:"


def channel_of(job_id: uuid.UUID | str) -> str:
    """The Redis pub/sub channel of one job's events."""
    return f"{CHANNEL_PREFIX}{job_id}"


def job_id_of_channel(channel: str) -> uuid.UUID | None:
    """Inverse of channel_of; None for another channel."""
    if not channel.startswith(CHANNEL_PREFIX):
        return None
    try:
        return uuid.UUID(channel[len(CHANNEL_PREFIX) :])
    except ValueError:
        return None


class EventPublisher:
    """After each commit of a session from the factory it is installed on: publish the events
    the transaction appended, and dispatch its webhook deliveries. Never raises."""

    def __init__(
        self,
        settings: Settings,
        *,
        celery: Celery | None = None,
        dispatch: Callable[[Celery, Sequence[uuid.UUID]], None] | None = None,
    ) -> None:
        self._settings = settings
        self._redis: redis.Redis | None = None
        self._celery = celery
        self._dispatch = dispatch

    def install(self, factory: sessionmaker[Session]) -> None:
        """Hook the factory's sessions: publish after commit, forget after rollback."""
        event.listen(factory, "after_commit", self._after_commit)
        event.listen(factory, "after_rollback", _forget)

    def _client(self) -> redis.Redis:
        if self._redis is None:
            timeout = self._settings.redis_timeout_s
            self._redis = redis.Redis.from_url(
                self._settings.redis_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                socket_keepalive=True,
                health_check_interval=self._settings.keepalive_idle_s,
            )
        return self._redis

    def _after_commit(self, session: Session) -> None:
        events: list[Event] = session.info.pop(PENDING_EVENTS, [])
        deliveries: list[uuid.UUID] = session.info.pop(PENDING_DELIVERIES, [])
        if events:
            self.publish(events)
        if deliveries and self._dispatch is not None:
            try:
                if self._celery is None:
                    from shared.queue import make_celery

                    self._celery = make_celery(self._settings)
                self._dispatch(self._celery, deliveries)
            except Exception as exc:  # the reconciler re-sends deliveries nobody picked up
                log.warning("could not hand %d webhook deliveries to the queue: %s", len(deliveries), exc)

    def publish(self, events: Sequence[Event]) -> None:
        """Publish committed events on their jobs' channels, one message per job (best effort)."""
        by_job: dict[uuid.UUID, list[Event]] = {}
        for item in events:
            by_job.setdefault(item.job_id, []).append(item)
        try:
            pipe = self._client().pipeline(transaction=False)
            for job_id, batch in by_job.items():
                pipe.publish(channel_of(job_id), encode_batch(batch))
            pipe.execute()
        except redis.RedisError as exc:  # streams rebuild what they missed from Postgres
            log.warning("could not publish %d job events: %s", len(events), exc)

    def close(self) -> None:
        """Close the Redis connection, if one was opened."""
        if self._redis is not None:
            self._redis.close()
            self._redis = None


def _forget(session: Session, *_: Any) -> None:
    session.info.pop(PENDING_EVENTS, None)
    session.info.pop(PENDING_DELIVERIES, None)
