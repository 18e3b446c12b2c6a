"""The pool process's watchdog, on a fake clock: ask a job to stop, then exit if it won't."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import pytest

from shared.config import Settings
from shared.db.queries import Claim
from workers.hooks import STOP_SHUTDOWN
from workers.runtime import JobRunner, WorkerContext
from workers.watchdog import EXIT_WATCHDOG, Watchdog, WatchdogEvent

STALL_S = 30.0
STUCK_S = 3.0
GRACE_S = 2.0


@dataclass
class FakeJob:
    """A watched job whose reason the test sets."""

    reason: str | None = None
    handbacks: list[str] = field(default_factory=list)

    def watchdog_reason(self, *, now: float, stall_s: float, stuck_s: float) -> str | None:
        assert (stall_s, stuck_s) == (STALL_S, STUCK_S)
        return self.reason

    def request_handback(self, reason: str) -> None:
        self.handbacks.append(reason)


@dataclass
class Harness:
    now: float = 0.0
    exits: list[int] = field(default_factory=list)
    events: list[WatchdogEvent] = field(default_factory=list)

    def watchdog(self) -> Watchdog:
        return Watchdog(
            stall_s=STALL_S,
            stuck_s=STUCK_S,
            grace_s=GRACE_S,
            on_event=self.events.append,
            exit_process=self.exits.append,
            clock=lambda: self.now,
            background=False,  # the test calls check() on its own clock
        )


@pytest.fixture
def harness() -> Harness:
    return Harness()


def test_a_healthy_job_is_left_alone(harness: Harness) -> None:
    dog, job = harness.watchdog(), FakeJob()
    dog.watch("j1", job)
    for _ in range(100):
        harness.now += 1.0
        dog.check()
    assert (job.handbacks, harness.exits, harness.events) == ([], [], [])


def test_a_job_that_stops_within_the_grace_keeps_the_process(harness: Harness) -> None:
    # Given a job whose lease is lost
    dog, job = harness.watchdog(), FakeJob(reason="lease lost")
    dog.watch("j1", job)
    dog.check()
    # Then it is asked to stop once, and counted
    assert job.handbacks == ["lease lost"]
    assert [(e.kind, e.job) for e in harness.events] == [("stop", "j1")]
    # When it returns just inside the grace period
    harness.now += GRACE_S - 0.1
    dog.check()
    dog.done()
    harness.now += 10 * GRACE_S
    dog.check()
    # Then the process lives on
    assert harness.exits == []
    assert job.handbacks == ["lease lost"]


def test_a_job_that_will_not_stop_ends_the_process(harness: Harness) -> None:
    # Given a job whose main thread is stuck
    dog, job = harness.watchdog(), FakeJob(reason="main thread reached no stop check for 31s")
    dog.watch("j1", job)
    dog.check()
    harness.now += GRACE_S - 0.5
    dog.check()
    assert harness.exits == []
    # When the grace runs out without it returning
    harness.now += 0.5
    dog.check()
    # Then the process exits with the watchdog's code, and the exit is counted
    assert harness.exits == [EXIT_WATCHDOG]
    assert [e.kind for e in harness.events] == ["stop", "exit"]
    assert job.handbacks == ["main thread reached no stop check for 31s"]


def test_the_next_job_starts_with_a_clean_slate(harness: Harness) -> None:
    dog = harness.watchdog()
    dog.watch("j1", FakeJob(reason="lease lost"))
    dog.check()
    dog.done()
    healthy = FakeJob()
    dog.watch("j2", healthy)
    harness.now += 10 * GRACE_S
    dog.check()
    assert harness.exits == [] and healthy.handbacks == []


def _runner() -> JobRunner:
    settings = Settings(lease_s=STUCK_S, heartbeat_s=0.5)
    ctx = WorkerContext(settings=settings, sessions=None, store=None, owner="test")  # type: ignore[arg-type]
    claim = Claim(
        job_id=uuid.uuid4(), tenant_id=uuid.uuid4(), attempt=1, job_type="gan.train", params={},
        checkpoint_key=None, checkpoint_step=None,
    )  # fmt: skip
    return JobRunner(ctx, claim)


def test_the_runner_tells_the_watchdog_why_it_should_stop() -> None:
    runner = _runner()
    start = time.monotonic()
    # A main thread that just checked in is healthy
    assert runner.should_stop() is None
    assert runner.watchdog_reason(now=start + 1, stall_s=STALL_S, stuck_s=STUCK_S) is None
    # One that reached no stop check for the stall time is not
    stalled = runner.watchdog_reason(now=start + STALL_S + 1, stall_s=STALL_S, stuck_s=STUCK_S)
    assert stalled is not None and stalled.startswith("main thread reached no stop check")
    # A heartbeat inside one call for a whole lease is stuck
    runner._sync_since = start
    stuck = runner.watchdog_reason(now=start + STUCK_S + 0.5, stall_s=STALL_S, stuck_s=STUCK_S)
    assert stuck is not None and stuck.startswith("heartbeat stuck")
    # And the hand-back it asks for is a shutdown stop: checkpoint, hand back, resume elsewhere
    runner.request_handback(stuck)
    assert runner.should_stop() == STOP_SHUTDOWN
