"""A discrete-event simulation of workers claiming jobs through Atelier's real fair-share policy.

Simulated workers take jobs with ``queries.claim_next``, the statement production's claim runs, on a real
Postgres, driven by the simulation's clock (the policy's ``now`` parameter); a job ends with an UPDATE fenced
by its attempt, stamped with the simulated time. Only the workers, the clock and the job durations are
simulated. Tests (tests/integration/test_fair_share.py) and benchmarks build
scenarios on it.

Each scenario runs on a queue of its own (a fresh name), so it shares a database with anything else.
"""

from __future__ import annotations

import heapq
import itertools
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.db import queries
from shared.db.queries.scheduling import DEFAULT_WINDOW_S
from shared.db.session import transaction
from shared.jobs.states import PRIORITIES

LEASE_S = 24 * 3600.0  # simulated workers never lose a lease
UNLIMITED = 2**62  # the memory an unlimited simulated worker advertises


@dataclass(frozen=True)
class Run:
    """One job's run on a worker, in simulated seconds from the start."""

    job_id: uuid.UUID
    tenant_id: uuid.UUID
    worker: int
    start: float
    end: float


@dataclass
class FairSim:
    """Workers of one queue claiming through the production policy, on a simulated clock."""

    sessions: sessionmaker[Session]
    workers: int
    capacities: Sequence[int] | None = None  # each worker's free device memory in bytes; None: unlimited
    window_s: float = DEFAULT_WINDOW_S
    queue: str = field(default_factory=lambda: f"sim-{uuid.uuid4().hex[:10]}")
    t0: datetime = field(default_factory=lambda: datetime.now(UTC))
    now: float = 0.0  # simulated seconds since t0
    runs: list[Run] = field(default_factory=list)
    _durations: dict[uuid.UUID, float] = field(default_factory=dict)
    _tenant_of: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    _events: list[tuple[float, int, int]] = field(default_factory=list)  # (free at, seq, worker)
    _busy: dict[int, tuple[uuid.UUID, int]] = field(default_factory=dict)  # worker -> (job, attempt)
    _idle: set[int] = field(default_factory=set)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _submitted: int = 0  # jobs so far: submission order breaks ties of the same simulated instant
    _token: uuid.UUID | None = None  # a job id of the queue: the claim's message names one

    def __post_init__(self) -> None:
        self._idle = set(range(self.workers))
        if self.capacities is not None and len(self.capacities) != self.workers:
            raise ValueError(f"{len(self.capacities)} capacities for {self.workers} workers")
        with transaction(self.sessions) as session:  # the workers advertise themselves, as real ones do
            for worker in range(self.workers):
                capacity = self.capacity(worker) or UNLIMITED
                queries.advertise(
                    session,
                    owner=f"{self.queue}-w{worker}",
                    queues=[self.queue],
                    device="sim",
                    total_bytes=capacity,
                    free_bytes=capacity,
                    now=self.t0,
                )

    def capacity(self, worker: int) -> int | None:
        """The free device memory of ``worker`` (None: unlimited)."""
        return self.capacities[worker] if self.capacities is not None else None

    def at(self, seconds: float) -> datetime:
        """The wall-clock time stamp of a simulated instant."""
        return self.t0 + timedelta(seconds=seconds)

    def add_tenant(self, *, weight: float = 1.0, max_running: int | None = None) -> uuid.UUID:
        """A new tenant with this share weight and running limit."""
        tenant_id = uuid.uuid4()
        with transaction(self.sessions) as session:
            session.execute(
                text(
                    "INSERT INTO tenants (id, name, share_weight, max_running_jobs) "
                    "VALUES (:id, :name, :weight, :max_running)"
                ),
                {"id": tenant_id, "name": f"sim-{tenant_id.hex[:12]}", "weight": weight, "max_running": max_running},
            )
        return tenant_id

    def submit(
        self,
        tenant_id: uuid.UUID,
        durations: Sequence[float],
        *,
        priority: str = "normal",
        memory_bytes: int | None = None,
    ) -> list[uuid.UUID]:
        """Queue one job per duration now (in this order), each needing ``memory_bytes``; wake the idle workers."""
        ids = [uuid.uuid4() for _ in durations]
        rows = [
            {
                "id": job_id,
                "tenant_id": tenant_id,
                "queue": self.queue,
                "priority": PRIORITIES[priority],
                "memory": memory_bytes,
                "created_at": self.at(self.now) + timedelta(microseconds=self._submitted + i),  # in order
            }
            for i, job_id in enumerate(ids)
        ]
        self._submitted += len(ids)
        with transaction(self.sessions) as session:
            session.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, type, params, queue, state, progress_total, priority, "
                    "memory_bytes, created_at, updated_at) VALUES (:id, :tenant_id, 'sim.job', '{}'::jsonb, :queue, "
                    "'queued', 1, :priority, :memory, :created_at, :created_at)"
                ),
                rows,
            )
        for job_id, duration in zip(ids, durations, strict=True):
            self._durations[job_id] = duration
            self._tenant_of[job_id] = tenant_id
        self._token = self._token or ids[0]
        for worker in sorted(self._idle):
            heapq.heappush(self._events, (self.now, next(self._seq), worker))
        self._idle.clear()
        return ids

    def step(self) -> Run | None:
        """Advance to the next free worker: end its job, and let it claim. None when nothing is left to do."""
        while self._events:
            free_at, _seq, worker = heapq.heappop(self._events)
            self.now = max(self.now, free_at)
            with transaction(self.sessions) as session:
                self._finish(session, worker)
                assert self._token is not None
                claim = queries.claim_next(
                    session,
                    job_id=self._token,
                    owner=f"sim-worker-{worker}",
                    lease_s=LEASE_S,
                    window_s=self.window_s,
                    now=self.at(self.now),
                    capacity=self.capacity(worker),
                )
            if claim is None:
                self._idle.add(worker)
                continue
            run = Run(claim.job_id, claim.tenant_id, worker, self.now, self.now + self._durations[claim.job_id])
            self.runs.append(run)
            self._busy[worker] = (claim.job_id, claim.attempt)
            heapq.heappush(self._events, (run.end, next(self._seq), worker))
            return run
        return None

    def run_claims(self, count: int) -> list[Run]:
        """Let workers claim ``count`` jobs (fewer if the queue runs dry)."""
        made = []
        for _ in range(count):
            run = self.step()
            if run is None:
                break
            made.append(run)
        return made

    def run_until(self, seconds: float) -> None:
        """Run until the next event is at or after ``seconds`` of simulated time."""
        while self._events and self._events[0][0] < seconds:
            if self.step() is None:
                break
        self.now = max(self.now, seconds)

    def _finish(self, session: Session, worker: int) -> None:
        busy = self._busy.pop(worker, None)
        if busy is None:
            return
        job_id, attempt = busy
        done = end_run(session, job_id=job_id, attempt=attempt, at=self.at(self.now))
        assert done, f"job {job_id} attempt {attempt} was not running"

    def worker_seconds(self, start: float, end: float) -> dict[uuid.UUID, float]:
        """Per tenant, the worker-seconds its jobs held inside [start, end)."""
        held: dict[uuid.UUID, float] = defaultdict(float)
        for run in self.runs:
            overlap = min(run.end, end) - max(run.start, start)
            if overlap > 0:
                held[run.tenant_id] += overlap
        return dict(held)


def end_run(session: Session, *, job_id: uuid.UUID, attempt: int, at: datetime | None = None) -> bool:
    """A simulated run ends well: its attempt, if still running, succeeds at ``at`` (default: the database's
    clock), fenced like the runner's own finish. False if it was not running."""
    ended = session.execute(
        text(
            "UPDATE jobs SET state = 'succeeded', finished_at = coalesce(CAST(:at AS timestamptz), now()), "
            "updated_at = coalesce(CAST(:at AS timestamptz), now()), lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = :id AND attempt = :attempt AND state = 'running'"
        ),
        {"id": job_id, "attempt": attempt, "at": at},
    )
    return int(ended.rowcount or 0) == 1  # type: ignore[attr-defined]


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index of non-negative allocations: 1 when equal, 1/n when one takes all."""
    total, squares = sum(values), sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0
