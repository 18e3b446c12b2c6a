"""Server-sent events: the parser, and following a job across dropped connections without repeats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from atelier_client import (
    ArtifactSaved,
    AsyncAtelier,
    Atelier,
    ConnectionFailed,
    Done,
    MetricsUpdate,
    ProgressUpdate,
    StateChange,
    WaitTimeout,
    WarningRaised,
)
from atelier_client.sse import SSEDecoder, iter_sse

from tests.unit.client.conftest import JOB_ID, FakeAPI, FakeClock, job_json, sse

EVENTS_PATH = f"/v1/jobs/{JOB_ID}/events"
JOB_PATH = f"/v1/jobs/{JOB_ID}"
TS = 1_700_000_000.5

STATE = (1, "state", {"state": "running", "attempt": 1, "error": None, "ts": TS})
PROGRESS = (2, "progress", {"step": 5, "total": 10, "steps_per_second": 2.0, "eta_seconds": 2.5, "ts": TS})
METRICS = (3, "metrics", {"step": 5, "values": {"d_loss": 0.69, "d_real": 0.5, "d_fake": 0.4}, "ts": TS})
WARNING = (4, "warning", {"message": "D wins", "ts": TS})
ARTIFACT = (
    5,
    "artifact",
    {"name": "samples/a.png", "kind": "sample", "step": 5, "size": 10, "content_type": "image/png", "ts": TS},
)
DONE = (6, "done", {"state": "succeeded", "error": None, "ts": TS})


def stream(body: bytes, *, fail: bool = False) -> httpx.Response:
    """An event-stream answer; ``fail`` drops the connection after ``body``."""

    def chunks() -> Iterator[bytes]:
        yield body
        if fail:
            raise httpx.ReadError("connection reset by peer")

    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=chunks())


# --- the parser ------------------------------------------------------------------------------------


def test_the_parser_joins_data_lines_skips_comments_and_keeps_the_last_id() -> None:
    decoder = SSEDecoder()
    lines = [
        ": ping",
        "id: 7",
        "event: warning",
        "data: first line",
        "data:second line",
        "retry: 1500",
        "",
        ": ping",
        "",  # a blank line with nothing pending dispatches nothing
        "data: no id or type",
        "",
        "data: cut off by the end of the stream",
    ]
    events = list(iter_sse(lines, decoder))
    assert [(e.event, e.data, e.id) for e in events] == [
        ("warning", "first line\nsecond line", "7"),
        ("message", "no id or type", "7"),
    ]
    assert events[0].retry_ms == 1500 and decoder.comments == 2


def test_a_response_with_crlf_line_breaks_parses_the_same(atelier: Atelier, api: FakeAPI) -> None:
    body = sse(STATE, DONE).replace(b"\n", b"\r\n")
    api.on("GET", EVENTS_PATH, httpx.Response(200, content=body))
    assert [e.type for e in atelier.events(JOB_ID)] == ["state", "done"]


# --- following a job ------------------------------------------------------------------------------


def test_events_are_typed_and_end_after_done(atelier: Atelier, api: FakeAPI) -> None:
    api.on("GET", EVENTS_PATH, stream(b": ping\n\n" + sse(STATE, PROGRESS, METRICS, WARNING, ARTIFACT, DONE)))
    events = list(atelier.events(JOB_ID))
    assert [e.id for e in events] == [1, 2, 3, 4, 5, 6]
    payloads = [e.payload for e in events]
    assert isinstance(payloads[0], StateChange) and payloads[0].state == "running"
    assert isinstance(payloads[1], ProgressUpdate) and payloads[1].eta_seconds == 2.5
    assert isinstance(payloads[2], MetricsUpdate) and payloads[2].values["d_fake"] == 0.4
    assert isinstance(payloads[3], WarningRaised) and payloads[3].message == "D wins"
    assert isinstance(payloads[4], ArtifactSaved) and payloads[4].name == "samples/a.png"
    assert isinstance(payloads[5], Done) and payloads[5].state == "succeeded" and payloads[5].ts == TS
    assert api.requests[0].headers["Accept"] == "text/event-stream"


def test_a_dropped_stream_resumes_after_the_last_event_without_repeats(
    atelier: Atelier, api: FakeAPI, clock: FakeClock
) -> None:
    # Given a stream that drops mid-event after event 2, then one whose server repeats event 2
    half_event = b'id: 3\nevent: metrics\ndata: {"step": 5'
    api.on(
        "GET",
        EVENTS_PATH,
        stream(sse(STATE, PROGRESS) + half_event, fail=True),
        stream(sse(PROGRESS, METRICS) + b": ping\n\n", fail=False),  # ends without `done`: the server went away
        stream(sse(WARNING, ARTIFACT, DONE)),
    )
    # When the events are read
    events = list(atelier.events(JOB_ID))
    # Then each came once, in order, and each reconnect named the last event seen
    assert [e.id for e in events] == [1, 2, 3, 4, 5, 6]
    sent = [r.headers.get("Last-Event-ID") for r in api.to("GET", EVENTS_PATH)]
    assert sent == [None, "2", "3"]
    assert len(clock.sleeps) == 2


def test_events_can_start_after_a_given_id(atelier: Atelier, api: FakeAPI) -> None:
    api.on("GET", EVENTS_PATH, stream(sse(WARNING, ARTIFACT, DONE)))
    assert [e.id for e in atelier.events(JOB_ID, after=3)] == [4, 5, 6]
    assert api.requests[0].headers["Last-Event-ID"] == "3"


def test_a_stream_that_keeps_dropping_gives_up_at_the_deadline(
    atelier: Atelier, api: FakeAPI, clock: FakeClock
) -> None:
    api.on("GET", EVENTS_PATH, lambda _request: stream(b": ping\n\n", fail=True))
    with pytest.raises(ConnectionFailed, match="kept dropping"):
        list(atelier.events(JOB_ID))
    assert 0 < sum(clock.sleeps) <= 30.0


def test_wait_follows_the_stream_and_returns_the_final_job(atelier: Atelier, api: FakeAPI) -> None:
    api.on(
        "GET",
        JOB_PATH,
        httpx.Response(200, json=job_json(state="running")),
        httpx.Response(200, json=job_json(state="running")),  # a cached read just after `done`
        httpx.Response(200, json=job_json(state="succeeded")),
    )
    api.on("GET", EVENTS_PATH, stream(sse(STATE, PROGRESS, DONE)))
    job = atelier.get_job(JOB_ID)
    final = job.wait()
    assert final.state == "succeeded"
    assert len(api.to("GET", EVENTS_PATH)) == 1


def test_wait_polls_when_the_server_has_no_event_stream(atelier: Atelier, api: FakeAPI, clock: FakeClock) -> None:
    # Given a server without /events (404 from the router)
    api.on(
        "GET",
        JOB_PATH,
        httpx.Response(200, json=job_json(state="queued")),
        httpx.Response(200, json=job_json(state="running")),
        httpx.Response(200, json=job_json(state="running", warnings=["D wins"])),
        httpx.Response(200, json=job_json(state="failed", error={"code": "diverged", "message": "NaN"})),
    )
    # When it is followed, Then the same kinds of events come from polls, ending with done
    events = list(atelier.follow(JOB_ID))
    assert [e.type for e in events] == ["state", "progress", "state", "warning", "state", "done"]
    done = events[-1].payload
    assert isinstance(done, Done) and done.state == "failed" and done.error is not None
    assert done.error.code == "diverged"
    assert clock.sleeps and all(s == 1.0 for s in clock.sleeps)


def test_wait_gives_up_at_its_timeout_with_the_last_state(atelier: Atelier, api: FakeAPI, clock: FakeClock) -> None:
    api.on("GET", JOB_PATH, httpx.Response(200, json=job_json(state="running")))  # and no stream
    with pytest.raises(WaitTimeout) as raised:
        atelier.wait(JOB_ID, timeout=3.5)
    assert raised.value.job is not None and raised.value.job.state == "running"
    assert sum(clock.sleeps) == pytest.approx(3.5)


def test_async_events_resume_after_a_dropped_stream(async_atelier: AsyncAtelier, api: FakeAPI) -> None:
    def async_stream(body: bytes, *, fail: bool) -> httpx.Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield body
            if fail:
                raise httpx.ReadError("connection reset by peer")

        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=chunks())

    api.on(
        "GET",
        EVENTS_PATH,
        async_stream(sse(STATE, PROGRESS, METRICS), fail=True),
        lambda _request: async_stream(sse(METRICS, WARNING, ARTIFACT, DONE), fail=False),
    )
    api.on(
        "GET",
        JOB_PATH,
        httpx.Response(200, json=job_json(state="running")),
        httpx.Response(200, json=job_json(state="succeeded")),
    )

    async def run() -> tuple[list[int | None], str]:
        async with async_atelier:
            ids = [e.id async for e in async_atelier.events(JOB_ID)]
            final = await async_atelier.wait(JOB_ID)
            return ids, final.state

    ids, state = asyncio.run(run())
    assert ids == [1, 2, 3, 4, 5, 6]
    assert [r.headers.get("Last-Event-ID") for r in api.to("GET", EVENTS_PATH)][:2] == [None, "3"]
    assert state == "succeeded"
    assert json.loads(sse(DONE).split(b"data: ")[1]) == DONE[2]


def test_a_204_after_the_last_event_ends_the_stream_without_reconnecting(
    atelier: Atelier, async_atelier: AsyncAtelier, api: FakeAPI
) -> None:
    # Given a finished job whose done the client has seen: the server answers 204 No Content
    api.on("GET", EVENTS_PATH, httpx.Response(204), httpx.Response(204))
    # Then both clients end at once, after one request each (a reconnect would find no reply queued)
    assert list(atelier.events(JOB_ID, after=6)) == []

    async def drain() -> list[object]:
        return [event async for event in async_atelier.events(JOB_ID, after=6)]

    assert asyncio.run(drain()) == []
    assert [r.headers["Last-Event-ID"] for r in api.to("GET", EVENTS_PATH)] == ["6", "6"]
