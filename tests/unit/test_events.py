"""The pure parts of live events: the per-watcher queue, follow()'s ordering and catch-up rules,
the Prefer and Last-Event-ID parsing, and which job events become webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.api.events import RESYNC, Watch, follow
from services.api.routes.events import parse_last_event_id
from services.api.routes.jobs import prefer_wait
from shared.db.queries.events import Event, decode_batch, done_event, encode_batch, state_event, webhook_event_of
from shared.errors import InvalidInput

JOB = uuid.uuid4()
PAGE = 3


def ev(seq: int, kind: str = "progress") -> Event:
    """An event of JOB."""
    return Event(job_id=JOB, seq=seq, type=kind, data={"step": seq})


class FakeHub:
    """Hands out one Watch the test feeds by hand."""

    def __init__(self) -> None:
        self.watch_obj = Watch(JOB, size=4)
        self.open = False

    @contextlib.asynccontextmanager
    async def watch(self, job_id: uuid.UUID) -> AsyncIterator[Watch]:
        self.open = True
        try:
            yield self.watch_obj
        finally:
            self.open = False


class Log:
    """The job's event log in 'Postgres': counts the reads."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.reads: list[int] = []

    async def load(self, job_id: uuid.UUID, after: int) -> list[Event]:
        self.reads.append(after)
        return [e for e in self.events if e.seq > after][:PAGE]


async def take(gen: AsyncIterator[list[Event] | None], n: int) -> list[list[int] | None]:
    """The next n batches (as ids), each within a second."""
    got = [await asyncio.wait_for(anext(gen), 1.0) for _ in range(n)]
    return [None if batch is None else [e.seq for e in batch] for batch in got]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_full_queue_drops_events_and_asks_for_a_resync() -> None:
    async def scenario() -> list[object]:
        watch = Watch(JOB, size=2)
        for seq in (1, 2, 3):  # the third does not fit
            watch.put((ev(seq),))
        first = await watch.get(timeout=0.1)
        second = await watch.get(timeout=0.1)
        return [first, second]

    assert run(scenario()) == [RESYNC, None]  # the queued ones were dropped too: the log has them


def test_follow_replays_the_log_in_pages_then_follows_live_batches_once_each() -> None:
    async def scenario() -> tuple[list[list[int] | None], list[int]]:
        hub, log = FakeHub(), Log([ev(i) for i in range(1, 6)])
        gen = follow(hub, JOB, after=1, load=log.load, page=PAGE, idle_s=0.05)  # type: ignore[arg-type]
        got = await take(gen, 2)  # 2..5 from the log, in two pages
        hub.watch_obj.put((ev(4), ev(5)))  # live: what the log already gave
        hub.watch_obj.put((ev(5), ev(6), ev(7)))  # one repeat, then two new ones from one commit
        got += await take(gen, 1)
        await gen.aclose()
        return got, log.reads

    got, reads = run(scenario())
    assert got == [[2, 3, 4], [5], [6, 7]]
    assert reads == [1, 4]  # a short second page ends the replay: no more reads


def test_follow_reads_the_log_again_after_a_gap_or_a_resync_and_never_while_idle() -> None:
    async def scenario() -> tuple[list[list[int] | None], list[int]]:
        hub, log = FakeHub(), Log([ev(1, "state")])
        gen = follow(hub, JOB, after=0, load=log.load, page=PAGE, idle_s=0.05)  # type: ignore[arg-type]
        got = await take(gen, 1)
        got += await take(gen, 2)  # idle twice: None, None, and no read
        log.events += [ev(2), ev(3), ev(4)]
        hub.watch_obj.put((ev(2), ev(4)))  # 3 was lost inside a batch: 2 goes out, then a gap
        got += await take(gen, 2)
        log.events += [ev(5), ev(6, "done")]
        hub.watch_obj.put(RESYNC)  # the hub reconnected to Redis
        got += await take(gen, 1)
        with pytest.raises(StopAsyncIteration):  # done ends it
            await anext(gen)
        assert not hub.open
        return got, log.reads

    got, reads = run(scenario())
    assert got == [[1], None, None, [2], [3, 4], [5, 6]]
    assert reads == [0, 2, 4]


def test_last_event_id_is_a_non_negative_integer_and_the_header_wins() -> None:
    assert parse_last_event_id(None, None) == 0
    assert parse_last_event_id(None, 7) == 7
    assert parse_last_event_id("12", 7) == 12
    assert parse_last_event_id(" ", 3) == 3
    for bad in ("-1", "seven", "1.5", "9" * 20):
        with pytest.raises(InvalidInput) as caught:
            parse_last_event_id(bad, None)
        assert caught.value.field == "Last-Event-ID"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("wait=5", 5),
        ("respond-async, wait=10", 10),
        ("WAIT = 3", 3),
        ('wait="7"', 7),
        ("wait=600", 60),  # capped
        ("wait=soon", None),  # can't be honoured: ignored (RFC 7240)
        ("wait=-1", None),
        ("return=minimal", None),
    ],
)
def test_prefer_wait(header: str | None, expected: int | None) -> None:
    assert prefer_wait(header, limit=60) == expected


def test_which_job_events_are_webhooks() -> None:
    assert webhook_event_of(*state_event("running", attempt=1, first=True)) == "start"
    assert webhook_event_of(*state_event("running", attempt=2)) is None  # a retry is not a new start
    assert webhook_event_of(*state_event("queued", attempt=0)) is None
    assert webhook_event_of(*done_event("failed", error_code="diverged", error_message="NaN")) == "completed"
    assert webhook_event_of("progress", {"step": 3}) == "progress"
    assert webhook_event_of("artifact", {"name": "samples/step-1.png"}) == "artifact"
    assert webhook_event_of("metrics", {"values": {}}) is None
    assert webhook_event_of("warning", {"message": "x"}) is None


def test_events_round_trip_through_their_published_form() -> None:
    batch = [
        Event(job_id=JOB, seq=9, type="metrics", data={"values": {"d_loss": 0.5}, "ts": 1.5}),
        Event(job_id=JOB, seq=10, type="progress", data={"step": 4, "ts": 1.5}),
    ]
    assert decode_batch(encode_batch(batch)) == batch
