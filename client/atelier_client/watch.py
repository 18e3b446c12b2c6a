"""``atelier watch``: a job's events as a live progress bar (a terminal) or as plain lines (a pipe,
a log, ``TERM=dumb``): progress with ETA, the latest losses with D(x) and D(G(z)), warnings as
they come and new artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from atelier_client.client import JobHandle
from atelier_client.models import (
    ArtifactSaved,
    Done,
    Event,
    Job,
    JobError,
    MetricsUpdate,
    ProgressUpdate,
    StateChange,
    WarningRaised,
)
from atelier_client.models import Progress as JobProgress

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_STOPPED_EARLY = 3
EXIT_CODES = {
    "succeeded": EXIT_SUCCEEDED,
    "failed": EXIT_FAILED,
    "cancelled": EXIT_CANCELLED,
    "stopped_early": EXIT_STOPPED_EARLY,
}
# What the GAN loop calls D's mean output on real and on generated images.
METRIC_LABELS = {"d_real": "D(x)", "d_fake": "D(G(z))"}
FIRST_METRICS = ("d_real", "d_fake")
PLAIN_PROGRESS_INTERVAL_S = 5.0  # plain output: at most one progress line this often
LIVE_REFRESH_PER_S = 4
SECONDS_PER_MINUTE = 60
SECONDS_PER_HOUR = 3600
KIB = 1024.0
SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def exit_code(state: str) -> int:
    """The process exit status for a job's final state: 0 succeeded, 1 failed, 2 cancelled, 3 stopped early."""
    return EXIT_CODES.get(state, EXIT_FAILED)


def duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s`` or ``42s``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    whole = round(seconds)
    hours, rest = divmod(whole, SECONDS_PER_HOUR)
    minutes, secs = divmod(rest, SECONDS_PER_MINUTE)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def size(count: int) -> str:
    """A byte count for people: ``12.3 KiB``."""
    value = float(count)
    for unit in SIZE_UNITS:
        if value < KIB or unit == SIZE_UNITS[-1]:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= KIB
    return f"{count} B"


def _metric_order(name: str) -> tuple[int, str]:
    if name.endswith("loss"):
        return (0, name)
    if name in FIRST_METRICS:
        return (1, str(FIRST_METRICS.index(name)))
    return (2, name)


def metric_line(values: Mapping[str, float]) -> str:
    """The metrics on one line, losses first, then D(x) and D(G(z)), then the rest."""
    return "  ".join(f"{METRIC_LABELS.get(n, n)} {values[n]:.4g}" for n in sorted(values, key=_metric_order))


def progress_line(update: JobProgress | ProgressUpdate) -> str:
    """``step 120/2000 (6%), 14.2 steps/s, ETA 2m13s``."""
    percent = f" ({100 * update.step / update.total:.0f}%)" if update.total else ""
    speed = f", {update.steps_per_second:.1f} steps/s" if update.steps_per_second else ""
    eta = f", ETA {duration(update.eta_seconds)}" if update.eta_seconds is not None else ""
    return f"step {update.step}/{update.total}{percent}{speed}{eta}"


def error_line(error: JobError | None) -> str:
    """``<code>: <message>`` of a job's error."""
    return f"{error.code}: {error.message}" if error else "no error recorded"


class Renderer(Protocol):
    """Shows a job's events."""

    def show(self, event: Event) -> None:
        """Show one event."""

    def close(self) -> None:
        """Stop showing (leave the last state on screen)."""


class PlainRenderer:
    """One line per state change, warning and artifact; progress at most every few seconds."""

    def __init__(self, console: Console, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.clock = clock
        self.metrics: dict[str, float] = {}
        self._last_progress_at: float | None = None

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def show(self, event: Event) -> None:
        """Print what the event says, if it is worth a line."""
        payload = event.payload
        if isinstance(payload, StateChange):
            suffix = f" (attempt {payload.attempt})" if payload.attempt else ""
            self._line(f"state: {payload.state}{suffix}")
        elif isinstance(payload, MetricsUpdate):
            self.metrics.update(payload.values)
        elif isinstance(payload, ProgressUpdate):
            now = self.clock()
            due = self._last_progress_at is None or now - self._last_progress_at >= PLAIN_PROGRESS_INTERVAL_S
            if due or (payload.total and payload.step >= payload.total):
                self._last_progress_at = now
                losses = f" | {metric_line(self.metrics)}" if self.metrics else ""
                self._line(progress_line(payload) + losses)
        elif isinstance(payload, WarningRaised):
            self._line(f"warning: {payload.message}")
        elif isinstance(payload, ArtifactSaved):
            self._line(f"artifact: {payload.name} ({size(payload.size)})")
        elif isinstance(payload, Done) and self.metrics:
            self._line(f"final metrics: {metric_line(self.metrics)}")

    def close(self) -> None:
        """Nothing to take down."""


class _Screen:
    """What the live display draws: the bar, then the metrics line."""

    def __init__(self, progress: Progress, metrics: Text) -> None:
        self.progress = progress
        self.metrics = metrics

    def __rich__(self) -> RenderableType:
        return Group(self.progress, self.metrics)


class LiveRenderer:
    """A rich progress bar with the server's ETA and a line of the latest metrics; other events print above it."""

    def __init__(self, console: Console, job: Job) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[speed]}"),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
        )
        total = job.progress.total or None
        self.task: TaskID = self.progress.add_task(
            job.state, total=total, completed=job.progress.step, speed="", eta=duration(job.progress.eta_seconds)
        )
        self.metrics: dict[str, float] = dict(job.latest_metrics)
        self.metrics_text = Text(metric_line(self.metrics))
        self.live = Live(
            _Screen(self.progress, self.metrics_text),
            console=console,
            refresh_per_second=LIVE_REFRESH_PER_S,
            transient=False,
        )
        self.live.start()

    def _above(self, text: str, style: str = "") -> None:
        self.live.console.print(Text(text, style=style))

    def _update(self, **fields: Any) -> None:
        self.progress.update(self.task, **fields)

    def show(self, event: Event) -> None:
        """Update the bar or the metrics, or print the event above them."""
        payload = event.payload
        if isinstance(payload, StateChange):
            self._update(description=payload.state)
            if payload.attempt > 1:
                self._above(f"attempt {payload.attempt}: {payload.state}", "yellow")
        elif isinstance(payload, ProgressUpdate):
            speed = f"{payload.steps_per_second:.1f} steps/s" if payload.steps_per_second else ""
            self._update(
                total=payload.total or None, completed=payload.step, speed=speed, eta=duration(payload.eta_seconds)
            )
        elif isinstance(payload, MetricsUpdate):
            self.metrics.update(payload.values)
            self.metrics_text.plain = metric_line(self.metrics)
        elif isinstance(payload, WarningRaised):
            self._above(f"warning: {payload.message}", "yellow")
        elif isinstance(payload, ArtifactSaved):
            self._above(f"artifact: {payload.name} ({size(payload.size)})", "cyan")
        elif isinstance(payload, Done):
            self._update(description=payload.state, eta=duration(0) if payload.state == "succeeded" else "-")

    def close(self) -> None:
        """Draw the last frame and stop."""
        self.live.stop()


def watch(job: JobHandle, console: Console, *, live: bool, timeout: float | None = None) -> JobHandle:
    """Show a job's events until it ends; its final state."""
    renderer: Renderer = LiveRenderer(console, job) if live else PlainRenderer(console)
    try:
        for event in job.follow(timeout=timeout):
            renderer.show(event)
    finally:
        renderer.close()
    return job.wait(timeout=timeout)
