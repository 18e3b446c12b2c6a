"""A watchdog per pool process: a job that cannot stop is given up, and a process that cannot
return from it exits so that Celery replaces it.

Deadlines on every network call (shared/db/deadlines.py, the Redis and S3 timeouts) keep a
silent peer from blocking a thread for ever. This is the last line behind them. It watches the
job the process is running and asks it to stop when:
- its lease is lost (a fenced write or heartbeat found another attempt);
- its main thread reached no stop check for ``watchdog_stall_s``;
- its heartbeat thread has been inside one call for a whole lease.

A job asked to stop checkpoints and hands itself back at its next stop check. If its main
thread has not returned within ``watchdog_grace_s``, the process exits with
``EXIT_WATCHDOG``. The job is requeued by its lease (or already was), and fencing stops any
write from this attempt, so nothing is lost or written twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shared import counters

log = logging.getLogger(__name__)

EXIT_WATCHDOG = 70  # EX_SOFTWARE: the pool process gave up a job it could not stop
MAX_TICK_S = 1.0
TICKS_PER_GRACE = 4


class Watched(Protocol):
    """What the watchdog reads from a running job (workers/runtime.py's JobRunner)."""

    def watchdog_reason(self, *, now: float, stall_s: float, stuck_s: float) -> str | None:
        """Why this job should stop now, or None."""

    def request_handback(self, reason: str) -> None:
        """Ask the job to checkpoint and hand itself back at its next stop check."""


@dataclass
class WatchdogEvent:
    """What the watchdog did (passed to ``on_event``, e.g. to count it)."""

    kind: str  # "stop" (asked a job to stop) or "exit" (the process is about to exit)
    job: str
    reason: str


class Watchdog:
    """Watches one job at a time in this process; see the module docstring."""

    def __init__(
        self,
        *,
        stall_s: float,
        stuck_s: float,
        grace_s: float,
        on_event: Callable[[WatchdogEvent], None] = lambda _e: None,
        exit_process: Callable[[int], None] = os._exit,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        self.stall_s = stall_s
        self.stuck_s = stuck_s
        self.grace_s = grace_s
        self._on_event = on_event
        self._exit = exit_process
        self._clock = clock
        self._lock = threading.Lock()
        self._job: tuple[str, Watched] | None = None
        self._asked: tuple[float, str] | None = None
        self._thread: threading.Thread | None = None
        self._background = background  # False: the caller drives check() itself (tests)

    def watch(self, name: str, job: Watched) -> None:
        """Start watching ``job`` (the process runs one at a time)."""
        with self._lock:
            self._job, self._asked = (name, job), None
            if self._background and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()

    def done(self) -> None:
        """The job returned: stop watching it."""
        with self._lock:
            self._job, self._asked = None, None

    def _run(self) -> None:
        tick = min(MAX_TICK_S, self.grace_s / TICKS_PER_GRACE)
        while True:
            time.sleep(tick)
            self.check()

    def check(self) -> None:
        """One look at the watched job (the thread calls this every tick; tests call it directly)."""
        with self._lock:
            watched, asked = self._job, self._asked
        if watched is None:
            return
        name, job = watched
        now = self._clock()
        if asked is None:
            reason = job.watchdog_reason(now=now, stall_s=self.stall_s, stuck_s=self.stuck_s)
            if reason is None:
                return
            with self._lock:
                if self._job is not watched:
                    return
                self._asked = (now, reason)
            log.warning("watchdog: job %s: %s; asking it to stop", name, reason)
            job.request_handback(reason)
            self._on_event(WatchdogEvent(kind="stop", job=name, reason=reason))
            return
        asked_at, reason = asked
        if now - asked_at >= self.grace_s:
            log.critical(
                "watchdog: job %s did not stop within %.1fs of being asked (%s); exiting so the pool replaces "
                "this process",
                name,
                self.grace_s,
                reason,
            )
            self._on_event(WatchdogEvent(kind="exit", job=name, reason=reason))
            for handler in logging.getLogger().handlers:
                handler.flush()
            self._exit(EXIT_WATCHDOG)


def count_event(redis_url: str, *, timeout_s: float) -> Callable[[WatchdogEvent], None]:
    """An ``on_event`` that counts each event (``watchdog_stop``, ``watchdog_exit``) in shared/counters.py."""

    def on_event(event: WatchdogEvent) -> None:
        counters.increment(redis_url, f"watchdog_{event.kind}", timeout_s=timeout_s)

    return on_event
