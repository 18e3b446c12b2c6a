"""Fair share at scale: a discrete-event simulation of GPU workers driving the production scheduling code.

Run as ``python -m bench.scale`` (``make bench-scale``). It needs the Postgres the tests use and creates,
then drops, a database of its own.

What is real and what is simulated: every scheduling decision is made by the statements production runs,
on a real Postgres, at the simulation's clock (their ``now`` parameter): the claim (``queries.claim_next``
with the worker's free memory), the hand-back on preemption (``queries.finish_job`` to ``queued``), and the
reconciler's lease sweep (``queries.expire_leases``). Simulated: the workers, the clock, the job lengths,
the arrivals, the losses; a job's end is an UPDATE fenced by its attempt, stamped with simulated time.

The scenario (defaults; every figure is an option):
- ``--workers`` GPU workers in 3 memory classes (50 % with 24 GiB, 30 % with 48 GiB, 20 % with 80 GiB);
- ``--tenants`` tenants whose submission rates follow a Zipf law (s = 1.1), one queue, weight 1 each;
- ``--jobs-per-worker`` x workers jobs arriving as a Poisson process at ``--load`` x the workers' capacity
  (1.1: oversubscribed, as shared GPU clusters are, so tenants' backlogs compete),
  lengths log-normal (sigma 1.2: heavy-tailed) with mean ``--mean-job-s``, memory needs 16 GiB (70 %),
  40 GiB (20 %) or 70 GiB (10 %);
- each worker is lost at ``--loss-per-h`` (it stops heartbeating; the lease runs out and the reconciler
  requeues the job, which resumes from its last checkpoint, every ``--checkpoint-s`` of work) and preempted
  at ``--preempt-per-h`` (SIGTERM: it checkpoints and hands the job back); either way a replacement joins
  after ``--replace-s``;
- a message wakes one idle worker per arrival, a worker that ends a job claims again at once, and the
  reconciler's pass (every ``--reconcile-s``) sweeps expired leases and wakes idle workers for the queue's
  shortfall, as production does (a woken worker that has nothing fitting stays idle).

Reported per scale (``--scales``, e.g. 10,100,1000 workers; the last one is the scenario above): worker
utilisation; per-tenant wait (first start minus submission) p50 and p99 across tenants; Jain's index of the
worker time of the tenants that had work waiting for a whole ``--fair-bucket-s`` (per span, then the mean: 1.0 is equal
shares; jobs that only the larger workers can hold may lower it legitimately); jobs lost (never finished: must be 0); work redone after losses
(must stay under one checkpoint interval per loss); and the policy's cost: claim latency p50 and p99.
Exit status 1 if a job was lost or redone work passed its bound.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import itertools
import math
import random
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bench.api import BenchError, guarded_main, percentile
from bench.fair_sim import end_run, jain_index
from shared.config import Settings
from shared.db import queries
from shared.db.migrate import upgrade
from shared.db.session import make_engine, make_sessionmaker, transaction
from shared.jobs.states import JobState
from tests.support import services

GIB = 1024**3
WORKER_CLASSES = ((24 * GIB, 0.5), (48 * GIB, 0.3), (80 * GIB, 0.2))  # (free memory, share of workers)
JOB_NEEDS = ((16 * GIB, 0.7), (40 * GIB, 0.2), (70 * GIB, 0.1))  # (memory need, share of jobs)
ZIPF_S = 1.1
LENGTH_SIGMA = 1.2
LEASE_S = 60.0
QUEUE = "gpu"
MS = 1000.0
HOUR = 3600.0
STEADY = (0.1, 0.9)  # fractions of the arrival period that utilisation is measured over
HORIZON_SLACK = 20.0  # the simulation stops this many longest jobs after the last arrival


@dataclass(frozen=True)
class Scenario:
    """One simulated cluster and its workload."""

    workers: int
    tenants: int
    jobs: int
    mean_job_s: float
    load: float
    loss_per_h: float
    preempt_per_h: float
    checkpoint_s: float
    replace_s: float
    reconcile_s: float
    window_s: float
    fair_bucket_s: float
    seed: int


@dataclass
class SimJob:
    """What the simulation knows of a job (the database knows the rest)."""

    id: uuid.UUID
    tenant: int
    arrival: float
    length: float
    need: int
    done: float = 0.0  # work checkpointed so far
    first_start: float | None = None
    end: float | None = None
    redone: float = 0.0


@dataclass
class Running:
    job: SimJob
    attempt: int
    start: float
    seq: int  # the end event's sequence number: a lost or preempted run's end event is stale


@dataclass
class Result:
    """One scale's figures."""

    scenario: Scenario
    horizon: float
    steady: tuple[float, float]  # the span utilisation is measured over
    busy_s: float
    available_s: float
    waits: dict[int, list[float]]
    jain: float  # mean per-hour Jain's index of backlogged tenants' worker time
    jain_hours: int
    lost: int
    losses: int
    preemptions: int
    redone_s: float
    claim_s: list[float]
    wall_s: float

    @property
    def utilisation(self) -> float:
        return self.busy_s / self.available_s if self.available_s else 0.0


@dataclass
class ScaleSim:
    """The cluster, the clock and the events."""

    sessions: sessionmaker[Session]
    sc: Scenario
    rng: random.Random
    t0: datetime = field(default_factory=lambda: datetime.now(UTC))
    now: float = 0.0
    events: list[tuple[float, int, str, int]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)
    capacity: list[int] = field(default_factory=list)
    running: dict[int, Running] = field(default_factory=dict)
    idle: set[int] = field(default_factory=set)
    down: set[int] = field(default_factory=set)
    jobs: list[SimJob] = field(default_factory=list)
    by_id: dict[uuid.UUID, SimJob] = field(default_factory=dict)
    tenant_ids: list[uuid.UUID] = field(default_factory=list)
    claim_s: list[float] = field(default_factory=list)
    busy: list[tuple[float, float, int]] = field(default_factory=list)  # (start, stop, tenant) of every run
    queued: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # per tenant, jobs waiting
    empty_since: dict[int, float] = field(default_factory=dict)  # per tenant, since when nothing waits
    gaps: dict[int, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    losses: int = 0
    preemptions: int = 0
    token: uuid.UUID | None = None

    def at(self, seconds: float) -> datetime:
        return self.t0 + timedelta(seconds=seconds)

    def push(self, when: float, kind: str, item: int) -> int:
        number = next(self.seq)
        heapq.heappush(self.events, (when, number, kind, item))
        return number

    # -- set-up ------------------------------------------------------------------------------------------------

    def build(self) -> None:
        """Tenants, workers (advertised, idle) and the arrivals (in the database as they come)."""
        sc, rng = self.sc, self.rng
        self.tenant_ids = [uuid.uuid4() for _ in range(sc.tenants)]
        with transaction(self.sessions) as session:
            session.execute(
                text("INSERT INTO tenants (id, name) VALUES (:id, :name)"),
                [{"id": t, "name": f"scale-{t.hex[:12]}"} for t in self.tenant_ids],
            )
        for worker in range(sc.workers):
            self.capacity.append(_pick(rng, WORKER_CLASSES))
            self.idle.add(worker)
            self.push(rng.expovariate(sc.loss_per_h / HOUR) if sc.loss_per_h else math.inf, "lose", worker)
            self.push(rng.expovariate(sc.preempt_per_h / HOUR) if sc.preempt_per_h else math.inf, "preempt", worker)
        rate = sc.load * sc.workers / sc.mean_job_s  # arrivals per second
        weights = [1.0 / (rank + 1) ** ZIPF_S for rank in range(sc.tenants)]
        mu = math.log(sc.mean_job_s) - LENGTH_SIGMA**2 / 2  # so the log-normal's mean is mean_job_s
        arrival = 0.0
        for index in range(sc.jobs):
            arrival += rng.expovariate(rate)
            job = SimJob(
                id=uuid.uuid4(),
                tenant=rng.choices(range(sc.tenants), weights=weights)[0],
                arrival=arrival,
                length=max(rng.lognormvariate(mu, LENGTH_SIGMA), 1.0),
                need=_pick(rng, JOB_NEEDS),
            )
            self.jobs.append(job)
            self.by_id[job.id] = job
            self.push(arrival, "arrive", index)
        self.push(sc.reconcile_s, "reconcile", 0)

    # -- the loop ----------------------------------------------------------------------------------------------

    def run(self) -> None:
        """Until every job has ended (or nothing can happen any more)."""
        remaining = len(self.jobs)
        # A job that can never end (which the report counts as lost) must not keep the losses going for ever.
        limit = self.jobs[-1].arrival + HORIZON_SLACK * max(j.length for j in self.jobs)
        while self.events and remaining:
            when, number, kind, item = heapq.heappop(self.events)
            if when == math.inf or when > limit:
                break
            self.now = when
            if kind == "arrive":
                self._arrive(self.jobs[item])
            elif kind == "end":
                remaining -= self._end(item, number)
            elif kind == "free":
                self._claim(item)
            elif kind == "lose":
                self._lose(item)
            elif kind == "preempt":
                self._preempt(item)
            elif kind == "reconcile":
                self._reconcile()
            elif kind == "back":
                self._back(item)

    def _arrive(self, job: SimJob) -> None:
        with transaction(self.sessions) as session:
            session.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, type, params, queue, state, progress_total, memory_bytes, "
                    "max_attempts, created_at, updated_at) VALUES (:id, :tenant, 'sim.job', '{}'::jsonb, :queue, "
                    "'queued', 1, :need, 100, :at, :at)"
                ),
                {"id": job.id, "tenant": self.tenant_ids[job.tenant], "queue": QUEUE, "need": job.need,
                 "at": self.at(self.now)},
            )  # fmt: skip
        self.token = self.token or job.id
        self._waiting(job.tenant, +1)
        if self.idle:  # its message wakes one idle worker
            worker = self.rng.choice(sorted(self.idle))
            self.idle.discard(worker)
            self.push(self.now, "free", worker)

    def _claim(self, worker: int) -> None:
        if worker in self.down or worker in self.running:
            return
        assert self.token is not None
        began = time.perf_counter()
        with transaction(self.sessions) as session:
            claim = queries.claim_next(
                session,
                job_id=self.token,
                owner=f"w{worker}",
                lease_s=LEASE_S,
                window_s=self.sc.window_s,
                now=self.at(self.now),
                capacity=self.capacity[worker],
            )
        self.claim_s.append(time.perf_counter() - began)
        if claim is None:
            self.idle.add(worker)
            return
        job = self.by_id[claim.job_id]
        assert job.need <= self.capacity[worker], "a worker claimed a job over its memory"
        self._waiting(job.tenant, -1)
        if job.first_start is None:
            job.first_start = self.now
        left = job.length - job.done
        number = self.push(self.now + left, "end", worker)
        self.running[worker] = Running(job, claim.attempt, self.now, number)
        # Heartbeats keep the lease alive while the worker lives: push it past the run's end.
        self._set_lease(job.id, claim.attempt, self.now + left + LEASE_S)

    def _end(self, worker: int, number: int) -> int:
        run = self.running.get(worker)
        if run is None or run.seq != number:
            return 0  # a stale end: the run was lost or preempted
        del self.running[worker]
        with transaction(self.sessions) as session:
            ended = end_run(session, job_id=run.job.id, attempt=run.attempt, at=self.at(self.now))
        if not ended:
            raise BenchError(f"job {run.job.id} attempt {run.attempt} was not running at its end")
        self.busy.append((run.start, self.now, run.job.tenant))
        run.job.end = self.now
        self.push(self.now, "free", worker)
        return 1

    def _interrupt(self, worker: int) -> Running | None:
        """The worker goes away: its run stops here. A replacement joins after replace_s."""
        run = self.running.pop(worker, None)
        self.idle.discard(worker)
        self.down.add(worker)
        self.push(self.now + self.sc.replace_s, "back", worker)
        if run is not None:
            self.busy.append((run.start, self.now, run.job.tenant))
        return run

    def _lose(self, worker: int) -> None:
        self._next(worker, "lose", self.sc.loss_per_h)
        if worker in self.down:
            return
        self.losses += 1
        run = self._interrupt(worker)
        if run is None:
            return
        worked = run.job.done + (self.now - run.start)
        saved = math.floor(worked / self.sc.checkpoint_s) * self.sc.checkpoint_s
        run.job.redone += worked - saved
        run.job.done = saved
        self._set_lease(run.job.id, run.attempt, self.now + LEASE_S)  # no more heartbeats from here

    def _preempt(self, worker: int) -> None:
        self._next(worker, "preempt", self.sc.preempt_per_h)
        if worker in self.down:
            return
        self.preemptions += 1
        run = self._interrupt(worker)
        if run is None:
            return
        run.job.done += self.now - run.start  # SIGTERM: it checkpoints at the next step, then hands back
        with transaction(self.sessions) as session:
            if not queries.finish_job(session, job_id=run.job.id, attempt=run.attempt, state=JobState.QUEUED):
                raise BenchError(f"job {run.job.id}: the hand-back was fenced out")
        self._waiting(run.job.tenant, +1)
        self._wake(1)

    def _next(self, worker: int, kind: str, per_h: float) -> None:
        if per_h:
            self.push(self.now + self.rng.expovariate(per_h / HOUR), kind, worker)

    def _reconcile(self) -> None:
        with transaction(self.sessions) as session:
            swept = queries.expire_leases(session, now=self.at(self.now))
            queued = queries.queued_per_queue(session).get(QUEUE, 0)
        for job_id, _queue in swept.requeued:
            self._waiting(self.by_id[job_id].tenant, +1)
        self._wake(queued)
        if any(j.end is None for j in self.jobs):
            self.push(self.now + self.sc.reconcile_s, "reconcile", 0)

    def _wake(self, count: int) -> None:
        for worker in self.rng.sample(sorted(self.idle), min(count, len(self.idle))):
            self.idle.discard(worker)
            self.push(self.now, "free", worker)

    def _waiting(self, tenant: int, change: int) -> None:
        """Track when each tenant had nothing waiting (its gaps): outside them it is backlogged."""
        before = self.queued[tenant]
        self.queued[tenant] = before + change
        if before == 0 and change > 0:
            self.gaps[tenant].append((self.empty_since.get(tenant, 0.0), self.now))
        elif before + change == 0:
            self.empty_since[tenant] = self.now

    def backlogged_jain(self, horizon: float) -> tuple[float, int]:
        """Jain's index of the worker time each backlogged tenant got, per bucket of ``fair_bucket_s``, averaged
        over the buckets in which at least two tenants had work waiting from start to end; and their number."""
        gaps = {
            t: [*g, (self.empty_since[t], horizon)] if self.queued[t] == 0 else list(g) for t, g in self.gaps.items()
        }
        for tenant in range(self.sc.tenants):
            gaps.setdefault(tenant, [(0.0, horizon)])
        indexes = []
        bucket = self.sc.fair_bucket_s
        for index in range(int(horizon // bucket)):
            start, end = index * bucket, (index + 1) * bucket
            backlogged = [t for t, g in gaps.items() if not any(a < end and b > start for a, b in g)]
            if len(backlogged) < 2:
                continue
            held = dict.fromkeys(backlogged, 0.0)
            for a, b, tenant in self.busy:
                if tenant in held:
                    held[tenant] += max(0.0, min(b, end) - max(a, start))
            indexes.append(jain_index(list(held.values())))
        return (statistics.fmean(indexes) if indexes else math.nan), len(indexes)

    def _set_lease(self, job_id: uuid.UUID, attempt: int, until: float) -> None:
        with transaction(self.sessions) as session:
            session.execute(
                text("UPDATE jobs SET lease_expires_at = :until WHERE id = :id AND attempt = :attempt"),
                {"id": job_id, "attempt": attempt, "until": self.at(until)},
            )

    def _back(self, worker: int) -> None:
        """A replacement worker joins."""
        self.down.discard(worker)
        self.push(self.now, "free", worker)


def _pick(rng: random.Random, table: tuple[tuple[int, float], ...]) -> int:
    return rng.choices([v for v, _p in table], weights=[p for _v, p in table])[0]


def simulate(settings: Settings, sc: Scenario) -> Result:
    """One scale in a fresh database."""
    db_name, db_url = services.create_database()
    try:
        scaled = Settings(environment="test", database_url=db_url, redis_url=settings.redis_url)
        upgrade(scaled)
        engine = make_engine(scaled, pool_size=2, call_deadline_s=60.0)
        try:
            sim = ScaleSim(make_sessionmaker(engine), sc, random.Random(sc.seed))
            sim.build()
            began = time.perf_counter()
            sim.run()
            wall = time.perf_counter() - began
        finally:
            engine.dispose()
    finally:
        services.drop_database(db_name)
    horizon = max((j.end or 0.0) for j in sim.jobs)
    # Utilisation over the arrivals' middle 80 %: no ramp-up, no drain after the last arrival.
    last = sim.jobs[-1].arrival
    steady = (STEADY[0] * last, STEADY[1] * last)
    busy = sum(max(0.0, min(stop, steady[1]) - max(start, steady[0])) for start, stop, _t in sim.busy)
    jain, jain_hours = sim.backlogged_jain(horizon)
    waits: dict[int, list[float]] = defaultdict(list)
    for job in sim.jobs:
        if job.first_start is not None and job.end is not None:
            waits[job.tenant].append(job.first_start - job.arrival)
    return Result(
        scenario=sc,
        horizon=horizon,
        steady=steady,
        busy_s=busy,
        available_s=sc.workers * (steady[1] - steady[0]),
        waits=dict(waits),
        jain=jain,
        jain_hours=jain_hours,
        lost=sum(1 for j in sim.jobs if j.end is None),
        losses=sim.losses,
        preemptions=sim.preemptions,
        redone_s=sum(j.redone for j in sim.jobs),
        claim_s=sim.claim_s,
        wall_s=wall,
    )


def report(result: Result) -> list[str]:
    """The lines printed for one scale."""
    sc = result.scenario
    p50s = [statistics.median(w) for w in result.waits.values()]
    p99s = [percentile(w, 0.99) for w in result.waits.values()]
    redone_bound = result.losses * sc.checkpoint_s
    return [
        f"{sc.workers} workers, {sc.tenants} tenants, {sc.jobs} jobs (mean {sc.mean_job_s:.0f} s, load {sc.load}): "
        f"{result.horizon / HOUR:.1f} simulated hours in {result.wall_s:.0f} s",
        f"  utilisation {result.utilisation:.3f} (hours {result.steady[0] / HOUR:.1f} to {result.steady[1] / HOUR:.1f},"
        f" worker replacements' gaps included); jobs lost {result.lost}; losses {result.losses}, preemptions "
        f"{result.preemptions}; work redone {result.redone_s:.0f} s (bound: one checkpoint interval per loss, "
        f"{redone_bound:.0f} s)",
        f"  wait per tenant: p50 median {statistics.median(p50s):.0f} s (max {max(p50s):.0f} s), p99 median "
        f"{statistics.median(p99s):.0f} s (max {max(p99s):.0f} s); Jain's index of backlogged tenants' worker "
        f"time {result.jain:.3f} (mean over {result.jain_hours} spans of {sc.fair_bucket_s:.0f} s with two or more "
        "backlogged)",
        f"  policy cost: claim p50 {statistics.median(result.claim_s) * MS:.1f} ms, p99 "
        f"{percentile(result.claim_s, 0.99) * MS:.1f} ms over {len(result.claim_s)} claims",
    ]


def run(args: argparse.Namespace, _stack: contextlib.ExitStack[None]) -> int:
    settings = Settings(environment="test", redis_url="redis://127.0.0.1:6379/0")
    status = 0
    costs = []
    for workers in args.scales:
        sc = Scenario(
            workers=workers,
            tenants=args.tenants,
            jobs=workers * args.jobs_per_worker,
            mean_job_s=args.mean_job_s,
            load=args.load,
            loss_per_h=args.loss_per_h,
            preempt_per_h=args.preempt_per_h,
            checkpoint_s=args.checkpoint_s,
            replace_s=args.replace_s,
            reconcile_s=args.reconcile_s,
            window_s=args.window_s,
            fair_bucket_s=args.fair_bucket_s,
            seed=args.seed,
        )
        result = simulate(settings, sc)
        for line in report(result):
            print(line, flush=True)
        costs.append((workers, statistics.median(result.claim_s), percentile(result.claim_s, 0.99)))
        if result.lost or result.redone_s > result.losses * sc.checkpoint_s + 1e-6:
            status = 1
    base = costs[0]
    print(
        "RESULT policy cost by workers: "
        + ", ".join(
            f"{w}: p50 {p50 * MS:.1f} ms ({p50 / base[1]:.2f}x), p99 {p99 * MS:.1f} ms" for w, p50, p99 in costs
        ),
        flush=True,
    )
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=lambda v: [int(x) for x in v.split(",")], default=[10, 100, 1000])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--jobs-per-worker", type=int, default=100)
    parser.add_argument("--mean-job-s", type=float, default=600.0)
    parser.add_argument("--load", type=float, default=1.1)
    parser.add_argument("--loss-per-h", type=float, default=0.01)
    parser.add_argument("--preempt-per-h", type=float, default=0.05)
    parser.add_argument("--checkpoint-s", type=float, default=300.0)
    parser.add_argument("--replace-s", type=float, default=300.0)
    parser.add_argument("--reconcile-s", type=float, default=30.0)
    parser.add_argument("--window-s", type=float, default=3600.0)
    parser.add_argument("--fair-bucket-s", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return guarded_main(lambda stack: run(args, stack))


if __name__ == "__main__":
    sys.exit(main())
