"""/v1/jobs/{id}/events: a job's live events as server-sent events, resumable by Last-Event-ID."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from services.api.deps import BearerKeyDep, StateDep
from services.api.events import follow
from services.api.reads import EVENT_PAGE
from services.api.schemas import ErrorOut
from shared.db.queries.events import EVENT_TYPES, Event
from shared.errors import InvalidInput
from shared.jobs.states import JobState

router = APIRouter(prefix="/v1/jobs", tags=["events"])

LAST_EVENT_ID_MAX_CHARS = 12
SSE_DESCRIPTION = (
    "A text/event-stream of the job's events: "
    + ", ".join(f"`{t}`" for t in EVENT_TYPES)
    + ". Every event has an integer id (1, 2, 3, ... per job). Reconnect with `Last-Event-ID` (or "
    "`?last_event_id=`) to get only what came after it. A comment line is sent every "
    "`ATELIER_EVENTS_HEARTBEAT_S` (15 s) without events; the stream ends after `done`. Resuming after "
    "the `done` of a finished job answers 204 No Content (nothing will follow: as the SSE spec says, "
    "stop reconnecting)."
)


def parse_last_event_id(header: str | None, query: int | None) -> int:
    """The id to resume after: the header (what browsers' EventSource send) wins over the query."""
    if header is None or header.strip() == "":
        return query or 0
    value = header.strip()
    if len(value) > LAST_EVENT_ID_MAX_CHARS or not value.isdigit():
        raise InvalidInput(
            "Last-Event-ID: must be an event id this stream sent (a non-negative integer)", field="Last-Event-ID"
        )
    return int(value)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    description=SSE_DESCRIPTION,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
        204: {"description": "The job has finished and the client has seen its last event"},
        401: {"model": ErrorOut, "description": "Missing, wrong or revoked API key"},
        404: {"model": ErrorOut, "description": "No such job for this tenant"},
        422: {"model": ErrorOut, "description": "Last-Event-ID is not an event id"},
    },
)
async def job_events(
    job_id: uuid.UUID,
    state: StateDep,
    raw_key: BearerKeyDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
    after: Annotated[
        int | None, Query(alias="last_event_id", ge=0, le=2**31 - 1, description="Resume after this event id")
    ] = None,
) -> Response:
    """Follow a job: every event after Last-Event-ID, in order, then the live stream until ``done``."""
    start = parse_last_event_id(last_event_id, after)
    job = await state.reader.job_row(raw_key, job_id, admit=state.limiter.admit)  # 401, 404, 429 before streaming
    if JobState(job.state).terminal and start >= job.event_seq:
        # `done` is the last event a finished job ever gets, and the client has it: a stream now would
        # wait for ever. 204 is how SSE tells a client to stop reconnecting.
        return Response(status_code=204, headers={"Cache-Control": "no-store"})
    settings = state.settings
    return EventSourceResponse(
        _frames(state, job_id, start),
        ping=int(max(1, settings.events_heartbeat_s)),
        send_timeout=settings.events_send_timeout_s,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _frames(state: Any, job_id: uuid.UUID, after: int) -> AsyncIterator[bytes]:
    stream = follow(
        state.hub,
        job_id,
        after=after,
        load=state.reader.events_after,
        page=EVENT_PAGE,
        idle_s=state.settings.events_heartbeat_s,
    )
    async with contextlib.aclosing(stream):
        async for batch in stream:
            if batch is not None:  # None: idle; sse-starlette's own ping keeps the connection alive
                yield b"".join(encoded(event) for event in batch)


ENCODED_CACHE_SIZE = 1024  # recent events' frames: one event fanned out to N local streams is encoded once
_encoded_frames: OrderedDict[tuple[uuid.UUID, int], bytes] = OrderedDict()


def encoded(event: Event) -> bytes:
    """The event's SSE frame. An id names one event of a job for ever, so frames are cached by (job, id)."""
    key = (event.job_id, event.seq)
    frame = _encoded_frames.get(key)
    if frame is None:
        frame = ServerSentEvent(id=str(event.seq), event=event.type, data=json.dumps(event.data)).encode()
        _encoded_frames[key] = frame
        if len(_encoded_frames) > ENCODED_CACHE_SIZE:
            _encoded_frames.popitem(last=False)
    return frame
