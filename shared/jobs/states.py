"""The job state machine: queued → running → succeeded | failed | cancelled | stopped_early.

stopped_early: a sweep trial its early-stopping rule ended (shared/jobs/sweeps.py), its checkpoint kept.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STOPPED_EARLY = "stopped_early"

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.STOPPED_EARLY})

# running → queued happens when a lease is lost while attempts remain.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.STOPPED_EARLY, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.STOPPED_EARLY: frozenset(),
}


def can_transition(src: JobState, dst: JobState) -> bool:
    """Whether the state machine allows ``src`` → ``dst``."""
    return dst in TRANSITIONS[src]


# A job's priority orders only its own tenant's queued jobs; fair share decides between tenants.
PRIORITIES: dict[str, int] = {"low": 0, "normal": 1, "high": 2}
PRIORITY_NAMES: dict[int, str] = {value: name for name, value in PRIORITIES.items()}
DEFAULT_PRIORITY = "normal"
