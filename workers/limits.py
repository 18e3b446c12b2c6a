"""Per-job limits the runtime enforces while a job runs: the artifact count and bytes
(``ATELIER_MAX_JOB_ARTIFACTS``, ``ATELIER_MAX_JOB_ARTIFACT_BYTES``) and the job's own
``max_runtime_s``. Going past one fails the job (``JobFailed``) with a code that says which.

The API refuses a job whose planned artifacts are over the caps (services/api/admission.py), so
the artifact caps are a backstop: a job reaches them only if the caps were lowered after it was
admitted. The job's earlier attempts count: what they recorded is read once, at the first save.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from shared.errors import JobFailed
from shared.jobs.memory import describe_bytes

ARTIFACT_LIMIT: Final = "artifact_limit"
RUNTIME_EXCEEDED: Final = "runtime_exceeded"
RUNTIME_PARAM: Final = "max_runtime_s"


class JobLimits:
    """One attempt's view of its job's limits; the loaders run lazily, at most once each."""

    def __init__(
        self,
        *,
        max_artifacts: int,
        max_artifact_bytes: int,
        max_runtime_s: float | None,
        recorded: Callable[[], Mapping[str, int]],
        started_at: Callable[[], datetime | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_artifacts = max_artifacts
        self.max_artifact_bytes = max_artifact_bytes
        self.max_runtime_s = max_runtime_s
        self._recorded = recorded
        self._started_at = started_at
        self._clock = clock
        self._sizes: dict[str, int] | None = None
        self._deadline: float | None = None

    @staticmethod
    def runtime_of(params: Mapping[str, Any]) -> float | None:
        """A job's ``max_runtime_s`` param, if it has one."""
        value = params.get(RUNTIME_PARAM)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def admit_artifact(self, name: str, size: int) -> None:
        """Raise JobFailed(artifact_limit) if storing ``name`` (``size`` bytes) would pass a cap; else count it."""
        if self._sizes is None:
            self._sizes = dict(self._recorded())
        sizes = {**self._sizes, name: size}  # a name saved again replaces its earlier object
        count, total = len(sizes), sum(sizes.values())
        if count > self.max_artifacts or total > self.max_artifact_bytes:
            raise JobFailed(
                f"artifact {name!r} would make {count} artifacts and {describe_bytes(total)}, over this server's "
                f"limit of {self.max_artifacts} artifacts and {describe_bytes(self.max_artifact_bytes)} a job "
                "(ATELIER_MAX_JOB_ARTIFACTS, ATELIER_MAX_JOB_ARTIFACT_BYTES); raise sample_every or snapshot_every",
                code=ARTIFACT_LIMIT,
            )
        self._sizes = sizes

    def check_runtime(self) -> None:
        """Raise JobFailed(runtime_exceeded) once the job has run for longer than its max_runtime_s."""
        if self.max_runtime_s is None:
            return
        now = self._clock()
        if self._deadline is None:
            started = self._started_at()
            elapsed = (datetime.now(UTC) - started).total_seconds() if started is not None else 0.0
            self._deadline = now + self.max_runtime_s - max(0.0, elapsed)
        if now > self._deadline:
            raise JobFailed(
                f"the job ran for longer than its max_runtime_s of {self.max_runtime_s:g} s (counted from when it "
                "first started); raise max_runtime_s or lower steps",
                code=RUNTIME_EXCEEDED,
            )
