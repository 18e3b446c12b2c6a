"""Load benchmark: 1,000 short jobs through 2 workers exactly once, and status polling at 200 rps.

Run as ``python -m bench.load`` (``make bench-load``). It needs the Postgres and Redis the tests
use (127.0.0.1:5432 and :6379). Like ``bench.api`` (whose machinery it reuses) it creates a fresh
database, claims a Redis db index and starts one uvicorn process with local storage; it adds two
Celery workers on the ``gpu`` queue (prefork, concurrency 1, ``ATELIER_TORCH_THREADS=1``), one on
the ``cpu`` queue and beat, so the reconciler runs throughout. Everything is removed on exit,
Ctrl-C included.

1. Many jobs: N small ``gan.train`` jobs are POSTed over a few keep-alive connections as fast as
   the API takes them, while the workers drain the queue. Then every job must have succeeded
   with ``attempt == 1``, have exactly one metrics row per name per step, and appear in exactly
   one claim line of the worker logs. Reported: submission jobs/s and POST latency, end-to-end
   jobs/s (first ``created_at`` to last ``finished_at``, one Postgres clock), and the rps of
   ``GET /v1/jobs/{id}`` cycling over all N ids (closed loop) beside one id (read-cache hits).
2. Polling while training: a longer ``gan.train`` runs alone, alternately with no client polling
   it and with ``GET /v1/jobs/{id}`` sent at a fixed 200 requests/s (open loop: latency counts from
   each request's scheduled send time). Its steps/s comes from the metrics rows' ``recorded_at``:
   the worker flushes every 2 s, and a flush's time lies within one step of the last step it
   carries, so the rate between the first and last periodic flushes is exact to about a step.
   The CPU the gpu workers, the API process and this client used over each run is read from /proc.

The last line printed holds the figures; the exit status is 1 if any job was lost, failed,
ran twice or the benchmark could not measure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bench.api import (
    HOST,
    HTTP_TIMEOUT_S,
    LOG_TAIL_CHARS,
    MS,
    SMALLEST_GAN,
    TERMINAL_STATES,
    WORKER_READY_TIMEOUT_S,
    BenchError,
    HttpConnection,
    api_server,
    bench_env,
    get_request,
    guarded_run,
    median,
    percentile,
    run_async,
    wait_until_serving,
)
from shared.config import Settings
from shared.db import queries
from shared.db.models import Job, Tenant
from shared.db.session import transaction
from shared.jobs.params import QUEUE_CPU, QUEUE_GPU
from shared.jobs.states import JobState
from tests.support import services
from workers.gan.loop import METRIC_NAMES

# --- part 1: many short jobs ----------------------------------------------------------------
JOBS = 1000
GPU_WORKERS = 2
SUBMIT_CONCURRENCY = 4  # keep-alive connections POSTing at once
NEVER = 1_000_000  # checkpoint_every / sample_every past the last step: only the final ones happen
SHORT_STEPS = 1
SHORT_JOB = {**SMALLEST_GAN, "steps": SHORT_STEPS, "checkpoint_every": NEVER, "sample_every": NEVER}
WARMUP_JOBS_PER_WORKER = 1  # the first job in a pool child loads the dataset; not counted
ACTIVE_JOBS_MARGIN = 100  # the tenant's quota is raised to N + this, so submission is never refused
DONE_POLL_S = 0.5  # how often the bench asks Postgres whether the jobs (or the unpolled run) finished
WAIT_S_PER_JOB = 1.0  # the end-to-end timeout, per job ...
WAIT_MIN_S = 180.0  # ... and at least this
CLAIM_LINE = re.compile(r"job ([0-9a-f-]{36}) \(([\w.]+)\) claimed: attempt (\d+)")
SKIP_LINE = re.compile(r"job ([0-9a-f-]{36}) is not claimable")

# --- part 1b: polling throughput over many ids ------------------------------------------------
POLL_CONCURRENCY = 8  # keep-alive connections, closed loop, as bench.api
POLL_ROUNDS = 3  # each round measures "many ids" then "one id"
POLL_PHASE_S = 3.0
POLL_WARMUP_S = 1.0

# --- part 2: polling one training job at a fixed rate ------------------------------------------
POLL_RATE_PER_S = 200.0
PAIRS = 3  # quiet + polled runs each; the order alternates (Q P, P Q, ...) so drift hits both alike
TRAIN_STEPS = 300
TRAIN_JOB = {
    "dataset": "digits",
    "image_size": 32,
    "steps": TRAIN_STEPS,
    "batch_size": 16,
    "nz": 32,
    "ngf": 16,
    "ndf": 16,
    "checkpoint_every": NEVER,
    "sample_every": NEVER,
}
TRAIN_TIMEOUT_S = 600.0
MIN_FLUSHES = 2  # periodic metric flushes needed to time a run
TERMINAL_MARKERS = tuple(f'"state":"{state}"'.encode() for state in TERMINAL_STATES)

# --- processes --------------------------------------------------------------------------------
GPU_WORKER_NAME = "load-gpu-{index}"
CPU_WORKER_NAME = "load-cpu"
BEAT_READY = "beat: Starting"
SUBMIT_PATH = "/v1/jobs"
PROC_PGRP, PROC_UTIME, PROC_STIME = 2, 11, 12  # /proc/<pid>/stat fields, counted after the ")" of the name
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CREATED = 201
OK = 200


# --- a keep-alive client that also POSTs and reads bodies ---------------------------------------


def post_request(path: str, port: int, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    """The bytes of a keep-alive POST request with a JSON body."""
    payload = json.dumps(body).encode()
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Accept: application/json",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
    ]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def exchange(conn: HttpConnection, raw: bytes) -> tuple[int, bytes]:
    """Send one request on ``conn``; return its status and whole body."""
    conn.writer.write(raw)
    head = await conn.reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await conn.reader.readexactly(length) if length else b""
    return int(head[9:12]), body


# --- part 1: submit, wait, verify -------------------------------------------------------------


@dataclass
class Submission:
    """The POST phase as the client saw it."""

    job_ids: list[uuid.UUID]
    elapsed_s: float
    latencies_s: list[float]

    @property
    def jobs_per_s(self) -> float:
        """Jobs accepted per second of the POST phase."""
        return len(self.job_ids) / self.elapsed_s


async def submit_all(port: int, key: str, *, jobs: int, concurrency: int) -> Submission:
    """POST ``jobs`` short jobs over ``concurrency`` keep-alive connections, as fast as they are taken."""
    raw = post_request(
        SUBMIT_PATH, port, {"type": "gan.train", "params": SHORT_JOB}, {"Authorization": f"Bearer {key}"}
    )
    conns = [await HttpConnection.open(port) for _ in range(concurrency)]
    ids: list[uuid.UUID] = []
    latencies: list[float] = []
    remaining = jobs

    async def drive(conn: HttpConnection) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            sent = time.perf_counter()
            status, body = await exchange(conn, raw)
            latencies.append(time.perf_counter() - sent)
            if status != CREATED:
                raise BenchError(f"submit answered {status}: {body[:300]!r}")
            ids.append(uuid.UUID(json.loads(body)["id"]))

    start = time.perf_counter()
    try:
        await asyncio.gather(*(drive(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    return Submission(ids, time.perf_counter() - start, latencies)


def wait_all_finished(sessions: sessionmaker[Session], job_ids: Sequence[uuid.UUID], *, timeout_s: float) -> float:
    """Block until every job is in a terminal state; returns the client's wait in seconds."""
    start = time.perf_counter()
    deadline = start + timeout_s
    pending: int | None = len(job_ids)
    while time.perf_counter() < deadline:
        with sessions() as session:
            pending = session.scalar(
                select(func.count()).where(Job.id.in_(job_ids), Job.state.not_in(list(TERMINAL_STATES)))
            )
        if not pending:
            return time.perf_counter() - start
        time.sleep(DONE_POLL_S)
    raise BenchError(f"{pending} of {len(job_ids)} jobs were not finished after {timeout_s:.0f} s")


@dataclass
class Verification:
    """What Postgres and the worker logs say about the N jobs."""

    jobs: int
    succeeded: int = 0
    not_succeeded: dict[str, int] = field(default_factory=dict)
    attempt_not_one: int = 0
    metrics_bad: int = 0
    multi_claimed: int = 0
    unclaimed: int = 0
    refused_duplicates: int = 0  # duplicate deliveries whose claim failed, as designed
    per_worker: dict[str, int] = field(default_factory=dict)
    e2e_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def exactly_once(self) -> bool:
        """Every job succeeded, on its first attempt, with a complete history, claimed once."""
        return (
            self.succeeded == self.jobs
            and not self.attempt_not_one
            and not self.metrics_bad
            and not self.multi_claimed
            and not self.unclaimed
        )


def count_claims(logs: Mapping[str, str]) -> tuple[dict[str, Counter[str]], Counter[str]]:
    """Claim lines per worker and job id, and refused (not claimable) lines per job id, from the worker logs."""
    claims: dict[str, Counter[str]] = {}
    skips: Counter[str] = Counter()
    for worker, log in logs.items():
        claims[worker] = Counter(match.group(1) for match in CLAIM_LINE.finditer(log))
        skips.update(match.group(1) for match in SKIP_LINE.finditer(log))
    return claims, skips


def verify(
    sessions: sessionmaker[Session], job_ids: Sequence[uuid.UUID], worker_logs: Mapping[str, str], *, steps: int
) -> Verification:
    """Check states, attempts, metric rows and claim lines of every job."""
    result = Verification(jobs=len(job_ids))
    with sessions() as session:
        rows = session.execute(select(Job.id, Job.state, Job.attempt).where(Job.id.in_(job_ids))).all()
        span = session.execute(
            select(func.min(Job.created_at), func.max(Job.finished_at)).where(Job.id.in_(job_ids))
        ).one()
        # One row per (job, name): rows, distinct steps, step range and the attempts that wrote them.
        metric_rows = session.execute(
            text(
                """
                SELECT job_id, name, count(*) AS n, count(DISTINCT step) AS steps,
                       min(step) AS first, max(step) AS last, min(attempt) AS lo, max(attempt) AS hi
                FROM metrics WHERE job_id = ANY(:ids) GROUP BY job_id, name
                """
            ),
            {"ids": list(job_ids)},
        ).all()
    if len(rows) != len(job_ids):
        result.problems.append(f"{len(job_ids) - len(rows)} submitted jobs have no row")
    states = Counter(row.state for row in rows)
    result.succeeded = states.pop(JobState.SUCCEEDED.value, 0)
    result.not_succeeded = dict(states)
    result.attempt_not_one = sum(1 for row in rows if row.attempt != 1)
    if span[0] is not None and span[1] is not None:
        result.e2e_s = (span[1] - span[0]).total_seconds()

    per_job: dict[uuid.UUID, dict[str, Any]] = {job_id: {} for job_id in job_ids}
    for row in metric_rows:
        per_job.setdefault(row.job_id, {})[row.name] = row
    # Every per-step metric: one row at each step 1..steps, all written by attempt 1.
    expected = (steps, steps, 1, steps, 1, 1)
    for names in per_job.values():
        shapes = [names.get(name) for name in METRIC_NAMES]
        if any(r is None or (r.n, r.steps, r.first, r.last, r.lo, r.hi) != expected for r in shapes):
            result.metrics_bad += 1

    per_worker, skips = count_claims(worker_logs)
    claims = sum(per_worker.values(), Counter[str]())
    wanted = {str(job_id) for job_id in job_ids}
    result.per_worker = {worker: sum(c[job_id] for job_id in wanted) for worker, c in per_worker.items()}
    result.multi_claimed = sum(1 for job_id in wanted if claims[job_id] > 1)
    result.unclaimed = sum(1 for job_id in wanted if claims[job_id] == 0)
    result.refused_duplicates = sum(skips[job_id] for job_id in wanted)
    return result


# --- part 1b: polling throughput over many job ids ----------------------------------------------


@dataclass
class PollPhase:
    """Closed-loop polling over a set of requests."""

    requests: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0


async def cycle_phase(conns: Sequence[HttpConnection], raws: Sequence[bytes], duration_s: float) -> PollPhase:
    """Every connection sends the next request of ``raws`` (round robin, shared) for ``duration_s``."""
    phase = PollPhase()
    deadline = time.perf_counter() + duration_s
    cursor = 0

    async def drive(conn: HttpConnection) -> None:
        nonlocal cursor
        while time.perf_counter() < deadline:
            raw = raws[cursor % len(raws)]
            cursor += 1
            sent = time.perf_counter()
            status = await conn.request(raw)
            phase.latencies_s.append(time.perf_counter() - sent)
            phase.errors += status != OK

    start = time.perf_counter()
    await asyncio.gather(*(drive(conn) for conn in conns))
    phase.elapsed_s = time.perf_counter() - start
    phase.requests = len(phase.latencies_s)
    return phase


async def measure_poll_throughput(
    port: int, endpoints: Mapping[str, Sequence[bytes]], *, concurrency: int, rounds: int, phase_s: float
) -> dict[str, PollPhase]:
    """Warm each endpoint set, then measure them in interleaved rounds; phases of a set are merged."""
    conns = [await HttpConnection.open(port) for _ in range(concurrency)]
    totals = {name: PollPhase() for name in endpoints}
    try:
        for raws in endpoints.values():
            await cycle_phase(conns, raws, POLL_WARMUP_S)
        for _ in range(rounds):
            for name, raws in endpoints.items():
                phase = await cycle_phase(conns, raws, phase_s)
                total = totals[name]
                total.requests += phase.requests
                total.elapsed_s += phase.elapsed_s
                total.latencies_s += phase.latencies_s
                total.errors += phase.errors
    finally:
        for conn in conns:
            await conn.close()
    return totals


# --- part 2: a training job, quiet or polled at a fixed rate ------------------------------------


@dataclass
class PacedPolls:
    """An open-loop poller's record: latency from each request's scheduled send time."""

    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    connections: int = 0  # opened in all
    reconnects: int = 0  # idle connections the server had closed, replaced

    @property
    def rps(self) -> float:
        """Responses per second over the polling window."""
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s else 0.0


async def poll_paced(port: int, raw: bytes, *, rate: float, timeout_s: float) -> PacedPolls:
    """Send ``raw`` at ``rate`` per second, whatever the answers' latency, until one says the job finished."""
    record = PacedPolls()
    idle: list[HttpConnection] = []  # last in, first out: spare connections go idle and may be closed
    opened: list[HttpConnection] = []
    finished = asyncio.Event()
    inflight: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []

    async def send() -> tuple[HttpConnection, int, bytes]:
        if idle:
            conn = idle.pop()
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                return conn, *await exchange(conn, raw)
            record.reconnects += 1  # the server closed it while idle (uvicorn's keep-alive timeout)
            await conn.close()
        conn = await HttpConnection.open(port)
        opened.append(conn)
        return conn, *await exchange(conn, raw)

    async def one(scheduled: float) -> None:
        conn, status, body = await send()
        record.latencies_s.append(time.perf_counter() - scheduled)
        idle.append(conn)
        if status != OK:
            record.errors += 1
        elif any(marker in body for marker in TERMINAL_MARKERS):
            finished.set()

    def done(task: asyncio.Task[None]) -> None:
        inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]
            finished.set()

    start = time.perf_counter()
    sent = 0
    try:
        while not finished.is_set():
            scheduled = start + sent / rate
            if scheduled - start > timeout_s:
                raise BenchError(f"the polled job did not finish within {timeout_s:.0f} s")
            # Always yield, so the answers are read even when the sender runs behind schedule.
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            task = asyncio.create_task(one(scheduled))
            inflight.add(task)
            task.add_done_callback(done)
            sent += 1
        record.elapsed_s = time.perf_counter() - start
        await asyncio.gather(*inflight, return_exceptions=True)
    finally:
        for task in list(inflight):
            task.cancel()
        for conn in opened:
            await conn.close()
    if failures:
        raise BenchError(f"{len(failures)} paced polls failed, e.g. {failures[0]!r}")
    record.connections = len(opened)
    return record


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[PROC_PGRP]) == pgid:
                total += int(fields[PROC_UTIME]) + int(fields[PROC_STIME])
    return total / CLOCK_TICKS


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far by the API, the gpu workers and this process, at a wall-clock time."""

    wall: float
    api: float
    workers: float
    client: float

    @classmethod
    def take(cls, api: services.Proc, workers: Sequence[services.Proc]) -> CpuMark:
        """Read the counters now."""
        return cls(
            time.perf_counter(),
            group_cpu_s(pid_of(api)),
            sum(group_cpu_s(pid_of(w)) for w in workers),
            time.process_time(),
        )


def pid_of(proc: services.Proc) -> int:
    """The pid of a started process."""
    if proc.proc is None:
        raise BenchError(f"{proc.name} is not running")
    return proc.proc.pid


@dataclass(frozen=True)
class Watched:
    """The running stack as part 2 needs it."""

    port: int
    key: str
    api: services.Proc
    workers: Sequence[services.Proc]


@dataclass
class TrainRun:
    """One training run of part 2, with the CPU (in cores) each side used over it."""

    polled: bool
    steps_per_s: float
    flushes: int
    wall_s: float
    polls: PacedPolls | None
    api_cores: float
    worker_cores: float
    client_cores: float
    cpu_wall_s: float  # submit to finish, as the client timed it: the span of the cpu columns
    steps: int


def flush_rate(sessions: sessionmaker[Session], job_id: uuid.UUID, *, steps: int) -> tuple[float, int]:
    """Steps/s between the first and last periodic metric flushes (the final one is left out)."""
    with sessions() as session:
        flushes = session.execute(
            text(
                "SELECT recorded_at, max(step) AS step FROM metrics WHERE job_id = :id "
                "GROUP BY recorded_at ORDER BY recorded_at"
            ),
            {"id": job_id},
        ).all()
    periodic = [row for row in flushes if row.step < steps]
    if len(periodic) < MIN_FLUSHES:
        raise BenchError(f"job {job_id}: {len(periodic)} periodic metric flushes; the run is too short to time")
    first, last = periodic[0], periodic[-1]
    return (last.step - first.step) / (last.recorded_at - first.recorded_at).total_seconds(), len(periodic)


def job_row(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    """The job's row, detached."""
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise BenchError(f"job {job_id} has no row")
        session.expunge(job)
        return job


def train_once(
    client: httpx.Client, sessions: sessionmaker[Session], stack: Watched, *, polled: bool, rate: float, steps: int
) -> TrainRun:
    """Submit the training job and wait for it: through Postgres (quiet) or through the API at ``rate``."""
    port, key = stack.port, stack.key
    before = CpuMark.take(stack.api, stack.workers)
    response = client.post(SUBMIT_PATH, json={"type": "gan.train", "params": {**TRAIN_JOB, "steps": steps}})
    if response.status_code != CREATED:
        raise BenchError(f"submit failed: {response.status_code} {response.text}")
    job_id = uuid.UUID(response.json()["id"])
    polls = None
    if polled:
        raw = get_request(f"{SUBMIT_PATH}/{job_id}", port, {"Authorization": f"Bearer {key}"})
        polls = run_async(lambda: poll_paced(port, raw, rate=rate, timeout_s=TRAIN_TIMEOUT_S))
    else:
        wait_all_finished(sessions, [job_id], timeout_s=TRAIN_TIMEOUT_S)
    after = CpuMark.take(stack.api, stack.workers)
    wall = after.wall - before.wall
    job = job_row(sessions, job_id)
    if job.state != JobState.SUCCEEDED.value or job.started_at is None or job.finished_at is None:
        raise BenchError(f"training job {job_id} ended {job.state}: {job.error_code} {job.error_message}")
    steps_per_s, flushes = flush_rate(sessions, job_id, steps=steps)
    return TrainRun(
        polled,
        steps_per_s,
        flushes,
        (job.finished_at - job.started_at).total_seconds(),
        polls,
        api_cores=(after.api - before.api) / wall,
        worker_cores=(after.workers - before.workers) / wall,
        client_cores=(after.client - before.client) / wall,
        cpu_wall_s=wall,
        steps=steps,
    )


def measure_polling_while_training(
    base_url: str, sessions: sessionmaker[Session], stack: Watched, *, pairs: int, rate: float, steps: int
) -> list[TrainRun]:
    """``pairs`` quiet and ``pairs`` polled runs, alternating the order within each pair."""
    runs: list[TrainRun] = []
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {stack.key}"}, timeout=HTTP_TIMEOUT_S
    ) as client:
        for pair in range(pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for polled in order:
                run = train_once(client, sessions, stack, polled=polled, rate=rate, steps=steps)
                kind = "polled" if polled else "quiet"
                print(f"  pair {pair + 1} {kind:<6} {run.steps_per_s:6.2f} steps/s ({run.flushes} flushes)", flush=True)
                runs.append(run)
    return runs


# --- setup ----------------------------------------------------------------------------------------


def seed_tenant(sessions: sessionmaker[Session], *, max_active_jobs: int) -> str:
    """A tenant whose quota admits every job of the run; returns its raw API key."""
    with transaction(sessions) as session:
        tenant = queries.create_tenant(session, name=f"load-{uuid.uuid4().hex[:8]}")
        session.execute(update(Tenant).where(Tenant.id == tenant.id).values(max_active_jobs=max_active_jobs))
        _row, raw = queries.create_api_key(session, tenant_id=tenant.id, label="bench-load")
        return raw


def warm_up(base_url: str, key: str, sessions: sessionmaker[Session], *, jobs: int) -> None:
    """Submit ``jobs`` short jobs at once and wait for them, so every pool child has run one."""
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT_S) as client:
        ids = []
        for _ in range(jobs):
            response = client.post(SUBMIT_PATH, json={"type": "gan.train", "params": SHORT_JOB})
            if response.status_code != CREATED:
                raise BenchError(f"warm-up submit failed: {response.status_code} {response.text}")
            ids.append(uuid.UUID(response.json()["id"]))
    wait_all_finished(sessions, ids, timeout_s=WORKER_READY_TIMEOUT_S)


# --- report -----------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the last line states."""

    verification: Verification
    submit: Submission
    polls: dict[str, PollPhase]
    runs: list[TrainRun]
    cache_s: float
    poll_rate: float  # requests/s of the paced polling in part 2

    @property
    def ratio(self) -> float:
        """Mean steps/s of the polled runs over that of the quiet runs."""
        polled = [r.steps_per_s for r in self.runs if r.polled]
        quiet = [r.steps_per_s for r in self.runs if not r.polled]
        return (sum(polled) / len(polled)) / (sum(quiet) / len(quiet))

    def paced_latencies_s(self) -> list[float]:
        """Every paced poll's latency, over all polled runs."""
        return [lat for r in self.runs if r.polls is not None for lat in r.polls.latencies_s]


def print_part1(v: Verification, submit: Submission, wait_s: float) -> None:
    """The exactly-once table and the throughputs of part 1."""
    post = submit.latencies_s
    print(f"{'many jobs':<40} {'value':>12}")
    rows: list[tuple[str, str]] = [
        ("jobs submitted", f"{v.jobs}"),
        ("succeeded", f"{v.succeeded}"),
        ("not succeeded (by state)", json.dumps(v.not_succeeded) if v.not_succeeded else "0"),
        ("attempt != 1", f"{v.attempt_not_one}"),
        ("incomplete or duplicated metric history", f"{v.metrics_bad}"),
        ("claimed more than once (worker logs)", f"{v.multi_claimed}"),
        ("never claimed (worker logs)", f"{v.unclaimed}"),
        ("duplicate deliveries refused by the claim", f"{v.refused_duplicates}"),
        ("claims per gpu worker", " / ".join(f"{n}" for n in v.per_worker.values())),
        ("submit: jobs/s (POST phase)", f"{submit.jobs_per_s:.1f}"),
        ("submit: POST p50 / p99 ms", f"{median(post) * MS:.1f} / {percentile(post, 0.99) * MS:.1f}"),
        ("submit: POST phase s", f"{submit.elapsed_s:.1f}"),
        ("e2e: first created -> last finished s", f"{v.e2e_s:.1f}"),
        ("e2e: jobs/s", f"{v.jobs / v.e2e_s:.2f}" if v.e2e_s else "n/a"),
        ("client wait after the last POST s", f"{wait_s:.1f}"),
    ]  # fmt: skip
    for label, value in rows:
        print(f"{label:<40} {value:>12}")
    for problem in v.problems:
        print(f"problem: {problem}")


def print_polls(polls: dict[str, PollPhase], jobs: int) -> None:
    """Closed-loop GET /v1/jobs/{id} over all ids and over one id."""
    print(
        f"{'GET /v1/jobs/{id}, closed loop':<32} {'requests':>9} {'rps':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for name, phase in polls.items():
        label = f"{name} ({jobs} ids)" if name == "many" else f"{name} (one id)"
        print(
            f"{label:<32} {phase.requests:>9} {phase.rps:>7.0f} {median(phase.latencies_s) * MS:>7.2f} "
            f"{percentile(phase.latencies_s, 0.99) * MS:>7.2f} {phase.errors:>6}"
        )


def print_part2(runs: Sequence[TrainRun], rate: float) -> None:
    """Each training run: steps/s, the paced polls' rate and latency, and who used the CPU."""
    head = ["run", "steps/s", "wall s", "polls/s", "p50 ms", "p99 ms", "conns", "reconn", "cpu:train", "api", "client"]
    head.append("train cpu ms/step")
    widths = (9, 8, 7, 8, 8, 9, 6, 6, 9, 5, 6, 17)
    print(" ".join(f"{h:<{w}}" if i == 0 else f"{h:>{w}}" for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    for i, run in enumerate(runs):
        cells = [f"{i + 1} {'polled' if run.polled else 'quiet'}", f"{run.steps_per_s:.2f}", f"{run.wall_s:.1f}"]
        if run.polls is None:
            cells += ["-"] * 5
        else:
            lat = run.polls.latencies_s
            cells += [
                f"{run.polls.rps:.1f}",
                f"{median(lat) * MS:.2f}",
                f"{percentile(lat, 0.99) * MS:.1f}",
                f"{run.polls.connections}",
                f"{run.polls.reconnects}",
            ]
        cells += [f"{run.worker_cores:.2f}", f"{run.api_cores:.2f}", f"{run.client_cores:.2f}"]
        cells.append(f"{run.worker_cores * run.cpu_wall_s / run.steps * MS:.1f}")
        print(
            " ".join(f"{c:<{w}}" if j == 0 else f"{c:>{w}}" for j, (c, w) in enumerate(zip(cells, widths, strict=True)))
        )
    print(
        "  cpu columns: cores used from submit to finish by the gpu workers (training), the API process and this "
        "client; train cpu ms/step: the gpu workers' CPU over that span per step"
    )
    pairs = [runs[i : i + 2] for i in range(0, len(runs) - 1, 2)]
    ratios = [
        next(r.steps_per_s for r in pair if r.polled) / next(r.steps_per_s for r in pair if not r.polled)
        for pair in pairs
    ]
    print("  steps/s polled/quiet per pair: " + " ".join(f"{ratio:.2f}" for ratio in ratios))
    print(f"  (target rate {rate:g} requests/s, open loop; latency from the scheduled send time)")


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are what docs/benchmarks.md reports."""
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=JOBS, help="short jobs submitted in part 1")
    parser.add_argument("--submit-concurrency", type=int, default=SUBMIT_CONCURRENCY, help="POST connections")
    parser.add_argument("--poll-rounds", type=int, default=POLL_ROUNDS, help="rounds of the closed-loop GET phase")
    parser.add_argument("--phase-seconds", type=float, default=POLL_PHASE_S, help="seconds per GET phase")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="quiet + polled training runs in part 2")
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="steps of the part 2 job")
    parser.add_argument("--rate", type=float, default=POLL_RATE_PER_S, help="paced polls per second in part 2")
    return parser.parse_args(argv)


def start_stack(
    settings: Settings, log_dir: Path, stack: contextlib.ExitStack
) -> tuple[list[services.Proc], list[services.Proc], int]:
    """The API, the gpu workers, a cpu worker and beat; returns (all of them, the gpu workers, port)."""
    port = services.free_port()
    server = api_server(settings, log_dir, port)
    gpu = [
        services.celery_worker(settings, log_dir, GPU_WORKER_NAME.format(index=i + 1), queues=QUEUE_GPU)
        for i in range(GPU_WORKERS)
    ]
    cpu = services.celery_worker(settings, log_dir, CPU_WORKER_NAME, queues=QUEUE_CPU)
    beat = services.celery_beat(settings, log_dir)
    procs = [server, *gpu, cpu, beat]
    for proc in procs:
        stack.callback(proc.stop)
        proc.start()
    wait_until_serving(server, port)
    try:
        for worker in (*gpu, cpu):
            worker.wait_for_log("ready.", timeout=WORKER_READY_TIMEOUT_S)
        beat.wait_for_log(BEAT_READY, timeout=WORKER_READY_TIMEOUT_S)
    except (RuntimeError, TimeoutError) as exc:
        raise BenchError(str(exc)) from None
    return procs, gpu, port


def dump_logs(procs: Sequence[services.Proc]) -> None:
    """The tail of every process's log, on stderr."""
    for proc in procs:
        print(f"--- {proc.name} log (tail) ---\n{proc.log()[-LOG_TAIL_CHARS:]}", file=sys.stderr)


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> Figures:
    """Set everything up (registering its cleanup on ``stack``), measure, report; returns the figures."""
    env = bench_env(stack, prefix="atelier-bench-load-")
    log_dir, settings, sessions = env.log_dir, env.settings, env.sessions
    key = seed_tenant(sessions, max_active_jobs=args.jobs + ACTIVE_JOBS_MARGIN)
    print(
        f"stack: 1 API process (read cache {settings.job_read_cache_s:g} s), {GPU_WORKERS} gpu workers "
        f"(prefork x1, torch threads {settings.torch_threads}), 1 cpu worker, beat "
        f"(reconcile every {settings.reconcile_period_s:g} s)",
        flush=True,
    )
    procs, gpu, port = start_stack(settings, log_dir, stack)
    try:
        return measure(args, settings, sessions, key, procs[0], gpu, port)
    except Exception:
        dump_logs(procs)
        raise


def measure(
    args: argparse.Namespace,
    settings: Settings,
    sessions: sessionmaker[Session],
    key: str,
    api: services.Proc,
    gpu: Sequence[services.Proc],
    port: int,
) -> Figures:
    """Warm up, then parts 1 and 2 against a running stack."""
    base_url = f"http://{HOST}:{port}"
    warm_up(base_url, key, sessions, jobs=WARMUP_JOBS_PER_WORKER * GPU_WORKERS)

    print(f"part 1: {args.jobs} jobs over {args.submit_concurrency} connections", flush=True)
    submit = run_async(lambda: submit_all(port, key, jobs=args.jobs, concurrency=args.submit_concurrency))
    wait_s = wait_all_finished(sessions, submit.job_ids, timeout_s=max(WAIT_MIN_S, args.jobs * WAIT_S_PER_JOB))
    verification = verify(sessions, submit.job_ids, {w.name: w.log() for w in gpu}, steps=SHORT_STEPS)
    print_part1(verification, submit, wait_s)

    auth = {"Authorization": f"Bearer {key}"}
    endpoints = {
        "many": [get_request(f"{SUBMIT_PATH}/{job_id}", port, auth) for job_id in submit.job_ids],
        "one": [get_request(f"{SUBMIT_PATH}/{submit.job_ids[0]}", port, auth)],
    }
    polls = run_async(
        lambda: measure_poll_throughput(
            port, endpoints, concurrency=POLL_CONCURRENCY, rounds=args.poll_rounds, phase_s=args.phase_seconds
        )
    )
    print_polls(polls, args.jobs)

    print(
        f"part 2: {args.train_steps}-step gan.train at 32 px, {args.pairs} x (quiet, polled at {args.rate:g}/s)",
        flush=True,
    )
    runs = measure_polling_while_training(
        base_url, sessions, Watched(port, key, api, gpu), pairs=args.pairs, rate=args.rate, steps=args.train_steps
    )
    print_part2(runs, args.rate)
    errors = sum(p.errors for p in polls.values()) + sum(r.polls.errors for r in runs if r.polls is not None)
    if errors:
        raise BenchError(f"{errors} polls were not answered 200")
    return Figures(verification, submit, polls, runs, settings.job_read_cache_s, args.rate)


def verdict(figures: Figures) -> str:
    """The last line: exactly-once, submission, end to end, paced polling and the steps/s ratio."""
    v = figures.verification
    once = "PASS" if v.exactly_once else "FAIL"
    e2e = v.jobs / v.e2e_s if v.e2e_s else 0.0
    lat = figures.paced_latencies_s()
    return (
        f"exactly-once {once} ({v.succeeded}/{v.jobs} succeeded, attempt!=1: {v.attempt_not_one}, "
        f"bad metrics: {v.metrics_bad}, multi-claimed: {v.multi_claimed}); "
        f"submit {figures.submit.jobs_per_s:.1f} jobs/s; e2e {e2e:.2f} jobs/s; "
        f"GET many ids {figures.polls['many'].rps:.0f} rps; "
        f"poll@{figures.poll_rate:g}/s p50 {median(lat) * MS:.1f} ms p99 {percentile(lat, 0.99) * MS:.1f} ms "
        f"(read cache {figures.cache_s:g} s); steps/s polled/quiet = {figures.ratio:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; cleans up every process, the database and the Redis db on any exit."""
    args = parse_args(argv)
    outcome = guarded_run(lambda stack: run(args, stack), header=f"load average {os.getloadavg()[0]:.1f}, ")
    if isinstance(outcome, int):
        return outcome
    figures, seconds = outcome
    print(f"total {seconds:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print(verdict(figures))
    return 0 if figures.verification.exactly_once else 1


if __name__ == "__main__":
    sys.exit(main())
