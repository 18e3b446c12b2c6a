"""Following a job, shared by both clients: turning server-sent events into ``Event``s across
reconnects (no repeats, resume after the last id, stop after ``done``), and, when no stream can
be had, the same events made from two successive polls of the job."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from atelier_client.models import Event, Job
from atelier_client.sse import ServerSentEvent, SSEDecoder

DONE_EVENT = "done"


def _event_id(raw: str | None) -> int | None:
    return int(raw) if raw is not None and raw.isdigit() else None


def _data(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"text": raw}
    return dict(value) if isinstance(value, Mapping) else {"value": value}


class EventFollower:
    """The state of one job's stream across connections: the last event id seen, and whether ``done`` came."""

    def __init__(self, *, last_id: int | None = None) -> None:
        self.last_id = last_id
        self.done = False
        self.retry_ms: int | None = None

    def decoder(self) -> SSEDecoder:
        """A parser for a new connection (a cut-off event of the last one is dropped with its parser)."""
        return SSEDecoder(last_event_id=None if self.last_id is None else str(self.last_id))

    def accept(self, sse: ServerSentEvent) -> Event | None:
        """The event to hand out, or None for one already seen (an id at or below the last)."""
        if sse.retry_ms is not None:
            self.retry_ms = sse.retry_ms
        event_id = _event_id(sse.id)
        if event_id is not None and self.last_id is not None and event_id <= self.last_id:
            return None
        if event_id is not None:
            self.last_id = event_id
        if sse.event == DONE_EVENT:
            self.done = True
        return Event.parse(id=event_id, type=sse.event, data=_data(sse.data))


def _ts(job: Job) -> float | None:
    return job.updated_at.timestamp() if job.updated_at is not None else None


def _error(job: Job) -> dict[str, str] | None:
    return None if job.error is None else {"code": job.error.code, "message": job.error.message}


def snapshot_events(previous: Job | None, current: Job) -> list[Event]:
    """The events that explain the change from one poll to the next (``done`` last when it ended)."""
    ts = _ts(current)
    out: list[Event] = []
    if previous is None or (previous.state, previous.attempt) != (current.state, current.attempt):
        data: dict[str, Any] = {"state": current.state, "attempt": current.attempt, "error": _error(current), "ts": ts}
        out.append(Event.parse(id=None, type="state", data=data))
    progress = current.progress
    if previous is None or previous.progress != progress:
        data = {
            "step": progress.step,
            "total": progress.total,
            "steps_per_second": progress.steps_per_second,
            "eta_seconds": progress.eta_seconds,
            "ts": ts,
        }
        out.append(Event.parse(id=None, type="progress", data=data))
    latest = current.latest_metrics
    if latest and (previous is None or previous.latest_metrics != latest):
        out.append(Event.parse(id=None, type="metrics", data={"step": progress.step, "values": latest, "ts": ts}))
    seen = len(previous.warnings) if previous is not None else 0
    for message in current.warnings[seen:]:
        out.append(Event.parse(id=None, type="warning", data={"message": message, "ts": ts}))
    if current.done:
        out.append(
            Event.parse(id=None, type=DONE_EVENT, data={"state": current.state, "error": _error(current), "ts": ts})
        )
    return out
