"""The job event log and the webhook outbox, written in the transaction that changes the job.

Every state transition, progress flush, metrics flush, warning and artifact appends an event to
``job_events`` with the next id of its job (dense: 1, 2, 3, ...). The caller holds the job row's
lock (a fenced update, a claim, or FOR UPDATE), so one job's ids are given out in commit order.
A job with a webhook also gets one ``webhook_deliveries`` row per event its filter selects, in
the same transaction (an outbox: nothing is sent that did not commit, nothing committed is lost).
After the commit, shared/events.py publishes the events on Redis and hands the deliveries to the
``cpu`` queue.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.db.models import Job, JobEvent, WebhookDelivery

EVENT_TYPES = ("state", "progress", "metrics", "warning", "artifact", "done")
WEBHOOK_EVENTS = ("start", "progress", "artifact", "completed")
DEFAULT_WEBHOOK_EVENTS = ("artifact", "completed")  # as Replicate: new outputs, and the end
WEBHOOK_PROGRESS_EVERY_S = 2.0
PENDING_EVENTS = "atelier.events"  # session.info key: events committed with the session's transaction
PENDING_DELIVERIES = "atelier.deliveries"


@dataclass(frozen=True)
class Event:
    """One entry of a job's event log."""

    job_id: uuid.UUID
    seq: int
    type: str
    data: dict[str, Any]


def encode_batch(events: Sequence[Event]) -> str:
    """One job's events of one commit, as published on Redis (one message per job and commit)."""
    return json.dumps(
        {"job_id": str(events[0].job_id), "events": [{"seq": e.seq, "type": e.type, "data": e.data} for e in events]}
    )


def decode_batch(raw: str | bytes) -> list[Event]:
    """Parse what ``encode_batch`` wrote."""
    body = json.loads(raw)
    job_id = uuid.UUID(body["job_id"])
    return [Event(job_id=job_id, seq=int(e["seq"]), type=e["type"], data=e["data"]) for e in body["events"]]


def state_event(
    state: str, *, attempt: int, error_code: str | None = None, error_message: str | None = None, first: bool = False
) -> tuple[str, dict[str, Any]]:
    """A ``state`` event's type and data; ``first`` marks a job's first start (the webhook's ``start``)."""
    error = {"code": error_code, "message": error_message or ""} if error_code else None
    data: dict[str, Any] = {"state": state, "attempt": attempt, "error": error}
    if first:
        data["first"] = True
    return "state", data


def done_event(
    state: str, *, error_code: str | None = None, error_message: str | None = None
) -> tuple[str, dict[str, Any]]:
    """The last event of a job: its terminal state and error."""
    error = {"code": error_code, "message": error_message or ""} if error_code else None
    return "done", {"state": state, "error": error}


def terminal_events(
    state: str, *, attempt: int, error_code: str | None = None, error_message: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """A move to a terminal state: its ``state`` event, then ``done``."""
    return [
        state_event(state, attempt=attempt, error_code=error_code, error_message=error_message),
        done_event(state, error_code=error_code, error_message=error_message),
    ]


def webhook_event_of(event_type: str, data: dict[str, Any]) -> str | None:
    """Which webhook event (if any) a job event is."""
    if event_type == "state" and data.get("state") == "running" and data.get("first"):
        return "start"
    if event_type == "done":
        return "completed"
    if event_type in ("progress", "artifact"):
        return event_type
    return None


def append_events(session: Session, *, job_id: uuid.UUID, items: Sequence[tuple[str, dict[str, Any]]]) -> list[Event]:
    """Append events to a job's log (and its webhook outbox). Call with the job row locked.

    Each event's ``ts`` (unix seconds) is now, unless its data brings one (the runner's flush time).
    """
    if not items:
        return []
    now = time.time()
    row = session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(event_seq=Job.event_seq + len(items))
        .returning(
            Job.event_seq,
            Job.tenant_id,
            Job.type,
            Job.state,
            Job.attempt,
            Job.progress_step,
            Job.progress_total,
            Job.webhook_url,
            Job.webhook_events,
        )
    ).one()
    first = row.event_seq - len(items) + 1
    events = [
        Event(job_id=job_id, seq=first + i, type=kind, data={"ts": now, **data}) for i, (kind, data) in enumerate(items)
    ]
    session.execute(
        insert(JobEvent).values([{"job_id": job_id, "seq": e.seq, "type": e.type, "data": e.data} for e in events])
    )
    session.info.setdefault(PENDING_EVENTS, []).extend(events)
    if row.webhook_url:
        _enqueue_deliveries(session, job=row, events=events)
    return events


def _enqueue_deliveries(session: Session, *, job: Any, events: Sequence[Event]) -> None:
    wanted = set(job.webhook_events or ())
    rows = []
    for event in events:
        name = webhook_event_of(event.type, event.data)
        if name is None or name not in wanted:
            continue
        if name == "progress" and not _progress_due(session, job_id=event.job_id):
            continue
        delivery_id = uuid.uuid4()
        body = {
            "type": f"job.{name}",
            "timestamp": datetime.fromtimestamp(event.data["ts"], UTC).isoformat(),
            "data": {
                "event": {"id": event.seq, "type": event.type, **event.data},
                "job": {
                    "id": str(event.job_id),
                    "type": job.type,
                    "state": job.state,
                    "attempt": job.attempt,
                    "progress": {"step": job.progress_step, "total": job.progress_total},
                    "links": {"self": f"/v1/jobs/{event.job_id}", "artifacts": f"/v1/jobs/{event.job_id}/artifacts"},
                },
            },
        }
        rows.append(
            {
                "id": delivery_id,
                "job_id": event.job_id,
                "tenant_id": job.tenant_id,
                "event_seq": event.seq,
                "event": name,
                "url": job.webhook_url,
                "body": json.dumps(body, separators=(",", ":")),
            }
        )
    if rows:
        session.execute(insert(WebhookDelivery).values(rows))
        session.info.setdefault(PENDING_DELIVERIES, []).extend(r["id"] for r in rows)


def _progress_due(session: Session, *, job_id: uuid.UUID) -> bool:
    """At most one progress delivery per WEBHOOK_PROGRESS_EVERY_S per job (marks it when due)."""
    marked = session.execute(
        text(
            """
            UPDATE jobs SET webhook_progress_at = clock_timestamp()
            WHERE id = :job_id AND (webhook_progress_at IS NULL
                                    OR webhook_progress_at <= clock_timestamp() - make_interval(secs => :every))
            RETURNING id
            """
        ),
        {"job_id": job_id, "every": WEBHOOK_PROGRESS_EVERY_S},
    ).first()
    return marked is not None


def events_after(session: Session, *, job_id: uuid.UUID, after: int, limit: int = 1000) -> list[Event]:
    """A job's events with ids above ``after``, oldest first."""
    rows = session.execute(
        select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > after).order_by(JobEvent.seq).limit(limit)
    ).scalars()
    return [Event(job_id=r.job_id, seq=r.seq, type=r.type, data=r.data) for r in rows]
