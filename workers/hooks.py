"""The seam between pure training code and the runtime (DB, storage, Celery).

Training loops in workers/gan and workers/style receive a ``TrainHooks`` object and
know nothing else about where they run. ``workers/runtime.py`` implements it on top
of Postgres and the object store; ``InMemoryHooks`` implements it for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

STOP_CANCEL = "cancel"
STOP_EARLY = "stopped_early"  # the sweep's early-stopping rule: checkpoint, then end as stopped_early
STOP_LEASE_LOST = "lease_lost"
STOP_SHUTDOWN = "shutdown"


class TrainHooks(Protocol):
    """What a training loop may ask of its runtime."""

    def report_metrics(self, step: int, values: dict[str, float]) -> None:
        """Record scalar metrics for one step (buffered; idempotent per (name, step))."""

    def report_progress(self, step: int, total: int) -> None:
        """Record that ``step`` of ``total`` units of work are done."""

    def save_checkpoint(self, step: int, data: bytes) -> None:
        """Persist a checkpoint taken after ``step``; returns once it is durable."""

    def load_checkpoint(self) -> bytes | None:
        """The latest durable checkpoint of this job, or None on a fresh start."""

    def save_artifact(self, name: str, data: bytes, *, kind: str, content_type: str) -> None:
        """Store a named output (sample grid, weights, image...) of the job."""

    def warn(self, message: str) -> None:
        """Attach a user-visible warning to the job."""

    def should_stop(self) -> str | None:
        """None to go on; otherwise why to stop (STOP_CANCEL, STOP_EARLY, STOP_LEASE_LOST, STOP_SHUTDOWN)."""


class StopRequested(Exception):
    """Raised by a loop after it checkpointed because ``should_stop`` said so."""

    def __init__(self, reason: str, step: int) -> None:
        super().__init__(f"stopped at step {step}: {reason}")
        self.reason = reason
        self.step = step


@dataclass
class InMemoryHooks:
    """Hooks that keep everything in memory, for tests and benchmarks."""

    metrics: dict[tuple[str, int], float] = field(default_factory=dict)
    metric_log: list[tuple[int, str, float]] = field(default_factory=list)
    checkpoints: list[tuple[int, bytes]] = field(default_factory=list)
    artifacts: dict[str, tuple[bytes, str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    progress: tuple[int, int] = (0, 0)
    stop_at_step: int | None = None
    stop_reason: str = STOP_CANCEL
    _last_step: int = -1

    def report_metrics(self, step: int, values: dict[str, float]) -> None:
        """Keep the latest value per (name, step) and the raw log."""
        self._last_step = max(self._last_step, step)
        for name, value in values.items():
            self.metrics[(name, step)] = float(value)
            self.metric_log.append((step, name, float(value)))

    def report_progress(self, step: int, total: int) -> None:
        """Remember the latest progress."""
        self._last_step = max(self._last_step, step)
        self.progress = (step, total)

    def save_checkpoint(self, step: int, data: bytes) -> None:
        """Append the checkpoint."""
        self.checkpoints.append((step, data))

    def load_checkpoint(self) -> bytes | None:
        """The newest checkpoint, if any."""
        return self.checkpoints[-1][1] if self.checkpoints else None

    def save_artifact(self, name: str, data: bytes, *, kind: str, content_type: str) -> None:
        """Keep the artifact bytes by name."""
        self.artifacts[name] = (data, kind, content_type)

    def warn(self, message: str) -> None:
        """Record a warning."""
        if message not in self.warnings:
            self.warnings.append(message)

    def should_stop(self) -> str | None:
        """Stop once progress reached ``stop_at_step``."""
        if self.stop_at_step is not None and self._last_step >= self.stop_at_step:
            return self.stop_reason
        return None

    def series(self, name: str) -> list[tuple[int, float]]:
        """All (step, value) pairs recorded for one metric, by step."""
        return sorted((s, v) for (n, s), v in self.metrics.items() if n == name)
