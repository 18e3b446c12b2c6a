"""Live events: 1,000 SSE clients on one API process while a gan.train job trains.

Run as ``python -m bench.events`` (``make bench-events``). Like ``bench.api`` (whose machinery it
reuses) it needs the test Postgres and Redis (127.0.0.1:5432 and :6379), creates a fresh database,
claims a Redis db index and uses a local-directory object store. Each training run gets a fresh API
process as deployed (``uvicorn services.api.edge:create_app --factory --http
services.api.edge:EdgeProtocol``, one process, no ``--workers``) and a fresh Celery worker on the
``gpu`` queue. Everything is removed on exit, Ctrl-C included.

Each run submits the job while no worker is up, so it waits queued; a watched run then opens N
streams (``GET /v1/jobs/{id}/events``) in batches, each reading its response head before the next
batch; then the worker starts and trains it while all N streams follow it to ``done``. A quiet run is
the same with no stream. Runs come in (quiet, watched) pairs, the order alternating from pair to pair.

The clients are raw asyncio streams in this process (uvloop when present): a GET with the
Authorization header, then the chunked body is de-chunked and its ``id:``/``event:``/``data:`` lines
parsed. Each client stamps each event with ``time.time()`` when it parsed it.

Reported:
- API memory per connection: the API process's VmRSS with all N connected minus before the first
  connects (after one warm-up stream of a finished job), divided by N;
- event latency of progress and metrics events: receipt minus the event's ``ts`` (the worker's flush
  time, taken just before its flush transaction), p50 and p99 over all (client, event) pairs. A direct
  subscriber to the job's Redis channel in this process splits it into the worker's part (flush ts ->
  published) and the API's (published -> parsed by a client), and a 50 ms timer measures this process's
  own event-loop lag, which would make receipts late;
- training steps/s, watched / quiet: each run's rate from its progress events in the job's event log
  (the same events the clients got): (last step - first step) / (ts last - ts first) over the periodic
  progress events (step < total), so start-up and the final artifacts are left out; mean of the watched
  runs over mean of the quiet ones. The worker's CPU per step is printed beside it: the machine's other
  load moves steps/s, not that;
- how many clients got every id 1..last with no gap, ending with ``done``, equal to the job's log in
  Postgres.

The last line is the verdict against the targets; the exit status is 1 if a target is missed or a
client's stream was incomplete.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bench.api import (
    HOST,
    HTTP_TIMEOUT_S,
    LOG_TAIL_CHARS,
    MS,
    WORKER_READY_TIMEOUT_S,
    BenchError,
    bench_env,
    guarded_run,
    median,
    percentile,
    run_async,
    wait_until_serving,
)
from bench.load import NEVER, group_cpu_s, job_row, pid_of, seed_tenant
from shared.config import Settings
from shared.db.queries.events import decode_batch
from shared.events import channel_of
from shared.jobs.params import QUEUE_GPU
from shared.jobs.states import JobState
from tests.support import services

# --- the job --------------------------------------------------------------------------------
STEPS = 6000  # 30 s or more of training on the 2-core VM of docs/benchmarks.md (up to about 170 steps/s when idle)
JOB = {  # small nets at 16 px, as tests/e2e/test_events.py; no intermediate grids or checkpoints
    "dataset": "digits",
    "image_size": 16,
    "batch_size": 8,
    "nz": 8,
    "ngf": 8,
    "ndf": 8,
    "seed": 3,
    "checkpoint_every": NEVER,
    "sample_every": NEVER,
    "image_metrics": False,
}
# The worker's flush cadence (ATELIER_METRICS_FLUSH_S; progress and metrics events go out at each): the
# default, 2 s, as deployed. --flush-seconds 0.5 is as often as metrics events may go (workers/runtime.py
# METRICS_EVENT_EVERY_S): 4 events/s to fan out instead of 1.
FLUSH_S = Settings.model_fields["metrics_flush_s"].default
PAIRS = 2  # (quiet, watched) pairs, alternating the order so drift in the machine's load hits both alike
TRAIN_TIMEOUT_S = 900.0
WARM_STEPS = 100
MIN_PROGRESS = 2  # periodic progress events needed to time a run

# --- the clients ----------------------------------------------------------------------------
CLIENTS = 1000
# Connections opened at once; each batch's response heads are read before the next. Under the edge's
# http_max_idle_per_client (64): all clients come from 127.0.0.1, and more than 64 connections of one
# address waiting for their request head at once would close the oldest.
BATCH = 50
CONNECT_TIMEOUT_S = 30.0  # per batch
SETTLE_S = 2.0  # after the last batch, before reading the API's RSS with all connected
READ_LIMIT = 1 << 20
NOFILE_PER_CLIENT = 1  # the bench's socket; the API's end is in its own process (same limit, inherited)
NOFILE_MARGIN = 512  # everything else: Postgres and Redis connections, logs, imports
LIVE_TYPES = ("progress", "metrics")  # the events whose latency is measured

# --- settings -------------------------------------------------------------------------------
# All N streams authenticate with one tenant's key within seconds: the tenant's request rate limit
# (default 200/s, burst 400) would answer 429, so it is raised (still checked on every request).
BENCH_RATE_LIMIT_PER_S = 1_000_000.0
BENCH_RATE_LIMIT_BURST = 1_000_000
# The failed-authentication limit per address (ATELIER_UNKNOWN_KEY_*) is left at its default: every
# key here is valid, so nothing is charged to it.
ACTIVE_JOBS = 10

# --- targets --------------------------------------------------------------------------------
P50_TARGET_MS = 100.0
P99_TARGET_MS = 1000.0
RATIO_TARGET = 0.8
RSS_SAMPLE_S = 0.5
LAG_TICK_S = 0.05

WORKER_NAME = "events-gpu-{index}"
EVENTS_PATH = "/v1/jobs/{job_id}/events"
CREATED = 201
OK = 200


# --- an SSE client on a raw asyncio stream --------------------------------------------------------


@dataclass
class Client:
    """What one stream received: ids and types in order, and (type, latency s) of live events."""

    ids: list[int] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    latencies: list[tuple[str, int, float]] = field(default_factory=list)  # (type, event id, latency s)
    done: bool = False
    error: str | None = None


def events_request(job_id: uuid.UUID, port: int, key: str) -> bytes:
    """The bytes of the GET that opens a job's event stream."""
    lines = [
        f"GET {EVENTS_PATH.format(job_id=job_id)} HTTP/1.1",
        f"Host: {HOST}:{port}",
        "Accept: text/event-stream",
        f"Authorization: Bearer {key}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_stream(port: int, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, send the GET and read the response head; raises BenchError unless it is a chunked 200."""
    reader, writer = await asyncio.open_connection(HOST, port, limit=READ_LIMIT)
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    if status != OK:
        body = await reader.read(2000)
        writer.close()
        raise BenchError(f"a stream was answered {status}: {head[:200]!r} {body[:300]!r}")
    if b"transfer-encoding: chunked" not in head.lower():
        writer.close()
        raise BenchError(f"a stream's response is not chunked: {head[:300]!r}")
    return reader, writer


class SseParser:
    """Incremental text/event-stream parsing of de-chunked body bytes (CRLF, LF or CR line ends)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._buffer = b""

    def feed(self, data: bytes, received: float) -> None:
        """Parse every complete event in ``data`` (plus what was left over), stamped ``received``."""
        buffer = self._buffer + data
        if buffer.endswith(b"\r"):  # a CR whose LF may come next: wait for it
            buffer, tail = buffer[:-1], b"\r"
        else:
            tail = b""
        buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = buffer.split(b"\n\n")
        self._buffer = rest + tail
        for block in blocks:
            self._event(block, received)

    def _event(self, block: bytes, received: float) -> None:
        event_id: int | None = None
        kind = "message"
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if not line or line.startswith(b":"):
                continue  # a comment (sse-starlette's ping)
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"id":
                event_id = int(value)
            elif name == b"event":
                kind = value.decode()
            elif name == b"data":
                data.append(value)
        if event_id is None and not data:
            return
        client = self.client
        if event_id is None:
            raise BenchError(f"an event without an id: {block[:200]!r}")
        client.ids.append(event_id)
        client.types.append(kind)
        if kind in LIVE_TYPES:
            client.latencies.append((kind, event_id, received - float(json.loads(b"\n".join(data))["ts"])))
        elif kind == "done":
            client.done = True


async def follow_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Client) -> None:
    """De-chunk the body and parse it until ``done`` or the end of the body."""
    parser = SseParser(client)
    try:
        while not client.done:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                break
            chunk = await reader.readexactly(size + 2)
            parser.feed(chunk[:-2], time.time())
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, BenchError) as exc:
        client.error = f"{type(exc).__name__}: {exc}"
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


class Tap:
    """A direct subscriber to the job's Redis channel in this process: when each event was published.

    It splits each event's latency into the worker's part (flush ``ts`` -> seen on Redis) and the API's
    (seen on Redis -> parsed by a client), both on this machine's clock.
    """

    def __init__(self, redis_url: str, job_id: uuid.UUID) -> None:
        self._client = aioredis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub()
        self._channel = channel_of(job_id)
        self.seen: dict[int, float] = {}  # event id -> time.time() when it arrived here
        self.ts: dict[int, float] = {}  # event id -> its ts, for live events
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe and read in the background until ``done``."""
        await self._pubsub.subscribe(self._channel)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None or message["type"] != "message":
                continue
            received = time.time()
            for event in decode_batch(message["data"]):
                self.seen[event.seq] = received
                if event.type in LIVE_TYPES:
                    self.ts[event.seq] = float(event.data["ts"])
                if event.type == "done":
                    return

    async def done(self) -> None:
        """Wait until the ``done`` event was published."""
        assert self._task is not None
        await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop reading and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._pubsub.aclose()
            await self._client.aclose()


class LoopLag:
    """How late this process's event loop runs a timer: if the clients' own loop falls behind, their
    receipt times (and so the latencies) are late too."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Tick every LAG_TICK_S in the background."""
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            self.lags.append(max(0.0, loop.time() - due))

    async def stop(self) -> None:
        """Stop ticking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# --- process measurements -------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """A process's resident set (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def open_files_limit(clients: int) -> int:
    """Raise this process's soft open-file limit (children inherit it) to what ``clients`` need, or the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = clients * NOFILE_PER_CLIENT + NOFILE_MARGIN
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"the hard open-file limit {hard} is under the {needed} that {clients} clients need")
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft == resource.RLIM_INFINITY or soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds used so far by the API, the worker and this process, at a wall-clock time."""

    wall: float
    api: float
    worker: float
    bench: float

    @classmethod
    def take(cls, api: services.Proc, worker: services.Proc) -> CpuMark:
        """Read the counters now."""
        return cls(time.perf_counter(), group_cpu_s(pid_of(api)), group_cpu_s(pid_of(worker)), time.process_time())

    def cores_until(self, later: CpuMark) -> tuple[float, float, float]:
        """Cores used by (API, worker, bench) between this mark and ``later``."""
        wall = later.wall - self.wall
        return (
            (later.api - self.api) / wall,
            (later.worker - self.worker) / wall,
            (later.bench - self.bench) / wall,
        )


# --- training runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    """A run's steps/s from its periodic progress events."""

    steps_per_s: float
    progress_events: int
    first_step: int
    last_step: int
    seconds: float
    total: int


def progress_rate(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Rate:
    """Steps/s between the first and last periodic progress events (step < total) of the job's log."""
    with sessions() as session:
        rows = session.execute(
            text("SELECT data FROM job_events WHERE job_id = :id AND type = 'progress' ORDER BY seq"),
            {"id": job_id},
        ).all()
    periodic = [row.data for row in rows if row.data["step"] < row.data["total"]]
    if len(periodic) < MIN_PROGRESS:
        raise BenchError(f"job {job_id}: {len(periodic)} periodic progress events; the run is too short to time")
    first, last = periodic[0], periodic[-1]
    seconds = last["ts"] - first["ts"]
    rate = (last["step"] - first["step"]) / seconds
    return Rate(rate, len(periodic), first["step"], last["step"], seconds, int(last["total"]))


def logged_events(sessions: sessionmaker[Session], job_id: uuid.UUID) -> list[tuple[int, str]]:
    """The job's event log: (id, type), in order."""
    with sessions() as session:
        rows = session.execute(
            text("SELECT seq, type FROM job_events WHERE job_id = :id ORDER BY seq"), {"id": job_id}
        ).all()
    return [(row.seq, row.type) for row in rows]


def submit(base_url: str, key: str, params: dict[str, object]) -> uuid.UUID:
    """POST the training job; its id."""
    response = httpx.post(
        f"{base_url}/v1/jobs",
        json={"type": "gan.train", "params": params},
        headers={"Authorization": f"Bearer {key}"},
        timeout=HTTP_TIMEOUT_S,
    )
    if response.status_code != CREATED:
        raise BenchError(f"submit failed: {response.status_code} {response.text}")
    return uuid.UUID(response.json()["id"])


def check_succeeded(sessions: sessionmaker[Session], job_id: uuid.UUID) -> float:
    """Fail unless the job succeeded; its started_at -> finished_at in seconds."""
    job = job_row(sessions, job_id)
    if job.state != JobState.SUCCEEDED.value or job.started_at is None or job.finished_at is None:
        raise BenchError(f"training job {job_id} ended {job.state}: {job.error_code} {job.error_message}")
    return (job.finished_at - job.started_at).total_seconds()


def start_worker(settings: Settings, log_dir: Path, index: int, stack: contextlib.ExitStack) -> services.Proc:
    """A fresh gpu worker (prefork, concurrency 1), ready."""
    worker = services.celery_worker(settings, log_dir, WORKER_NAME.format(index=index), queues=QUEUE_GPU)
    stack.callback(worker.stop)
    worker.start()
    try:
        worker.wait_for_log("ready.", timeout=WORKER_READY_TIMEOUT_S)
    except (RuntimeError, TimeoutError) as exc:
        raise BenchError(str(exc)) from None
    return worker


@dataclass(frozen=True)
class Bench:
    """What every training run shares."""

    settings: Settings
    log_dir: Path
    sessions: sessionmaker[Session]
    key: str
    params: dict[str, object]


@dataclass(frozen=True)
class Api:
    """One API process, serving."""

    proc: services.Proc
    port: int

    @property
    def base_url(self) -> str:
        """Where it listens."""
        return f"http://{HOST}:{self.port}"


@dataclass
class Run:
    """One training run: its rate, CPU, and what its watchers (none on a quiet run) saw."""

    watchers: int
    job_id: uuid.UUID
    clients: list[Client]
    rss_before: int  # the API's, before the first client connected
    rss_connected: int  # ... with all connected, before training
    rss_peak: int  # ... the most while training
    connect_s: float
    cores: tuple[float, float, float]  # API, worker, bench: from the worker's start to the last done
    worker_cpu_s: float  # the worker's CPU seconds over the same span
    published: dict[int, float]  # event id -> when the direct Redis subscriber got it
    live_ts: dict[int, float]  # event id -> ts, for progress and metrics events
    loop_lags: list[float]  # this process's event-loop lag while training
    load_after: float  # the 1-minute load average at the end
    rate: Rate | None = None
    wall_s: float = 0.0  # started_at -> finished_at
    logged: list[tuple[int, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """quiet, or watched by N."""
        return f"watched by {self.watchers}" if self.watchers else "quiet"


async def connect_all(
    api: Api, key: str, job_id: uuid.UUID, states: list[Client], batch: int
) -> list[asyncio.Task[None]]:
    """Open a stream per client, ``batch`` at a time (each batch's heads read before the next); their readers."""
    raw = events_request(job_id, api.port, key)
    tasks: list[asyncio.Task[None]] = []
    for first in range(0, len(states), batch):
        group = states[first : first + batch]
        try:
            opened = await asyncio.wait_for(
                asyncio.gather(*(open_stream(api.port, raw) for _ in group)), CONNECT_TIMEOUT_S
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            raise BenchError(
                f"connecting clients {first}..{first + len(group) - 1}: {type(exc).__name__} {exc}"
            ) from exc
        tasks += [asyncio.create_task(follow_stream(r, w, c)) for (r, w), c in zip(opened, group, strict=True)]
    return tasks


async def train_run(
    bench: Bench, api: Api, stack: contextlib.ExitStack, *, index: int, watchers: int, batch: int
) -> Run:
    """Submit with no worker up, connect the watchers, start a fresh worker, wait for done everywhere."""
    job_id = await asyncio.to_thread(submit, api.base_url, bench.key, bench.params)
    pid = pid_of(api.proc)
    rss_before = rss_bytes(pid)
    states = [Client() for _ in range(watchers)]
    started = time.perf_counter()
    tasks = await connect_all(api, bench.key, job_id, states, batch)
    connect_s = time.perf_counter() - started
    if watchers:
        await asyncio.sleep(SETTLE_S)
    rss_connected = rss_bytes(pid)
    if watchers:
        print(
            f"  {watchers} streams open in {connect_s:.1f} s (batches of {batch}); API RSS "
            f"{rss_before / 2**20:.1f} -> {rss_connected / 2**20:.1f} MiB",
            flush=True,
        )
    tap = Tap(bench.settings.redis_url, job_id)
    await tap.start()
    lag = LoopLag()
    run_stack = contextlib.ExitStack()
    stack.callback(run_stack.close)
    try:
        worker = await asyncio.to_thread(start_worker, bench.settings, bench.log_dir, index, run_stack)
        before = CpuMark.take(api.proc, worker)
        lag.start()
        peak = rss_connected
        all_done = asyncio.gather(tap.done(), *tasks)
        deadline = time.perf_counter() + TRAIN_TIMEOUT_S
        while not all_done.done():
            if time.perf_counter() > deadline:
                all_done.cancel()
                raise BenchError(f"no done after {TRAIN_TIMEOUT_S:.0f} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(all_done), RSS_SAMPLE_S)
            peak = max(peak, rss_bytes(pid))
        after = CpuMark.take(api.proc, worker)
        cores, worker_cpu_s = before.cores_until(after), after.worker - before.worker
    finally:
        await lag.stop()
        await tap.close()
    await asyncio.to_thread(run_stack.close)  # stops the worker
    return Run(
        watchers, job_id, states, rss_before, rss_connected, peak, connect_s, cores, worker_cpu_s, tap.seen, tap.ts,
        lag.lags, os.getloadavg()[0],
    )  # fmt: skip


def start_api(bench: Bench, stack: contextlib.ExitStack, *, index: int) -> Api:
    """A fresh API process, serving, stopped when ``stack`` closes."""
    port = services.free_port()
    proc = api_server(bench.settings, bench.log_dir, port, name=f"api-{index}")
    stack.callback(proc.stop)
    proc.start()
    wait_until_serving(proc, port, "/healthz")
    return Api(proc, port)


def measure_run(
    bench: Bench, stack: contextlib.ExitStack, *, index: int, watchers: int, batch: int, warm_job: uuid.UUID
) -> Run:
    """One training run on a fresh API process (warmed by one stream of ``warm_job``); then its rate and log."""
    print(f"run {index}: {f'{watchers} SSE clients' if watchers else 'quiet'}, a fresh API and worker", flush=True)
    with contextlib.ExitStack() as run_stack:
        api = start_api(bench, run_stack, index=index)
        try:
            warm_stream(api.port, bench.key, warm_job)
            run = run_async(lambda: train_run(bench, api, stack, index=index, watchers=watchers, batch=batch))
        except Exception:
            print(f"--- {api.proc.name} log (tail) ---\n{api.proc.log()[-LOG_TAIL_CHARS:]}", file=sys.stderr)
            raise
    run.wall_s = check_succeeded(bench.sessions, run.job_id)
    run.rate = progress_rate(bench.sessions, run.job_id)
    run.logged = logged_events(bench.sessions, run.job_id)
    print(f"  {run.rate.steps_per_s:.2f} steps/s, {run.wall_s:.1f} s started -> finished", flush=True)
    return run


def warm_up(bench: Bench, stack: contextlib.ExitStack) -> uuid.UUID:
    """A short quiet run, not counted: the first job of a database prepares its dataset. Its id."""
    print(f"warm-up: a {WARM_STEPS}-step job (not counted)", flush=True)
    short = dataclasses.replace(bench, params={**bench.params, "steps": WARM_STEPS})
    with contextlib.ExitStack() as run_stack:
        api = start_api(bench, run_stack, index=0)
        run = run_async(lambda: train_run(short, api, stack, index=0, watchers=0, batch=1))
    check_succeeded(bench.sessions, run.job_id)
    return run.job_id


def warm_stream(port: int, key: str, job_id: uuid.UUID) -> None:
    """One stream of a finished job, read to its end: starts the API's event hub and runs the route's code once."""
    with (
        httpx.Client(timeout=HTTP_TIMEOUT_S) as client,
        client.stream(
            "GET",
            f"http://{HOST}:{port}{EVENTS_PATH.format(job_id=job_id)}",
            headers={"Authorization": f"Bearer {key}"},
        ) as response,
    ):
        if response.status_code != OK:
            raise BenchError(f"the warm-up stream was answered {response.status_code}")
        for _ in response.iter_bytes():
            pass


# --- setup ------------------------------------------------------------------------------------------


def api_server(settings: Settings, log_dir: Path, port: int, *, name: str) -> services.Proc:
    """The API as deployed (EdgeProtocol), one process, no access log."""
    argv = [
        sys.executable, "-m", "uvicorn", "services.api.edge:create_app", "--factory",
        "--http", "services.api.edge:EdgeProtocol", "--host", HOST, "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return services.Proc(name=name, argv=argv, env=services.settings_env(settings), log_path=log_dir / f"{name}.log")


def event_settings(base: Settings, *, flush_s: float) -> Settings:
    """bench.api's settings with the flush cadence and the request rate limit of this bench, set explicitly."""
    return base.model_copy(
        update={
            "metrics_flush_s": flush_s,
            "rate_limit_per_s": BENCH_RATE_LIMIT_PER_S,
            "rate_limit_burst": BENCH_RATE_LIMIT_BURST,
        }
    )


# --- report -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    """Everything the last line states."""

    per_connection_kib: float
    p50_ms: float
    p99_ms: float
    ratio: float
    complete: int
    clients: int


def complete_clients(clients: Sequence[Client], logged: Sequence[tuple[int, str]]) -> tuple[int, dict[str, int]]:
    """How many clients got the whole log (every id once, in order, ending with done); why the others did not."""
    expected = list(logged)
    problems: dict[str, int] = {}
    good = 0
    for client in clients:
        if client.error is not None:
            reason = f"error {client.error.split(':', 1)[0]}"
        elif not client.done:
            reason = "no done event"
        elif client.ids != list(range(1, len(client.ids) + 1)):
            reason = "ids with a gap or out of order"
        elif list(zip(client.ids, client.types, strict=True)) != expected:
            reason = "not the job's log"
        else:
            good += 1
            continue
        problems[reason] = problems.get(reason, 0) + 1
    return good, problems


def quantiles_row(label: str, values: Sequence[float]) -> str:
    """One line of a latency table, in milliseconds."""
    return (
        f"{label:<34} {len(values):>8} {median(values) * MS:>8.1f} {percentile(values, 0.9) * MS:>8.1f} "
        f"{percentile(values, 0.99) * MS:>8.1f} {max(values) * MS:>8.1f}"
    )


def split_latencies(runs: Sequence[Run]) -> tuple[dict[str, list[float]], list[float], list[float]]:
    """Client latencies by event type; flush ts -> on Redis per event; on Redis -> client per pair."""
    by_type: dict[str, list[float]] = {kind: [] for kind in LIVE_TYPES}
    worker_part: list[float] = []
    api_part: list[float] = []
    for run in runs:
        worker_part += [run.published[i] - ts for i, ts in run.live_ts.items() if i in run.published]
        for client in run.clients:
            for kind, event_id, latency in client.latencies:
                by_type[kind].append(latency)
                if event_id in run.published:
                    api_part.append(run.live_ts[event_id] + latency - run.published[event_id])
    return by_type, worker_part, api_part


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean."""
    return sum(values) / len(values)


def bench_steps(run: Run) -> int:
    """The steps the run's job trained (the total its progress events carry)."""
    assert run.rate is not None
    return run.rate.total


def report(runs: Sequence[Run]) -> Figures:
    """Print the measurements; return the figures of the last line."""
    quiet = [r for r in runs if not r.watchers]
    watched = [r for r in runs if r.watchers]
    print(f"{'run':<16} {'steps/s':>8} {'progress ev':>11} {'steps':>11} {'s':>6} {'wall s':>7} {'API':>5} "
          f"{'worker':>6} {'bench':>5} {'worker ms/step':>14} {'load':>5}")  # fmt: skip
    for run in runs:
        r = run.rate
        assert r is not None
        api, worker, bench = run.cores
        steps = bench_steps(run)
        print(
            f"{run.label:<16} {r.steps_per_s:>8.2f} {r.progress_events:>11} {f'{r.first_step}-{r.last_step}':>11} "
            f"{r.seconds:>6.1f} {run.wall_s:>7.1f} {api:>5.2f} {worker:>6.2f} {bench:>5.2f} "
            f"{run.worker_cpu_s / steps * MS:>14.1f} {run.load_after:>5.1f}"
        )
    print(
        "  (API, worker, bench: cores used from the worker's start to the last done; worker ms/step: its CPU over "
        "that span / steps; load: 1-min load average at the end)"
    )
    rate = {id(r): r.rate.steps_per_s for r in runs if r.rate is not None}
    ratio = mean([rate[id(r)] for r in watched]) / mean([rate[id(r)] for r in quiet])
    pairs = [rate[id(w)] / rate[id(q)] for q, w in zip(quiet, watched, strict=True)]
    print("steps/s watched / quiet, per pair: " + " ".join(f"{p:.2f}" for p in pairs) + f"; mean/mean {ratio:.2f}")

    per_conn = []
    for run in watched:
        per_conn.append((run.rss_connected - run.rss_before) / run.watchers)
        print(
            f"API RSS, {run.label}: before {run.rss_before / 2**20:.1f} MiB, all connected "
            f"{run.rss_connected / 2**20:.1f} MiB, peak while streaming {run.rss_peak / 2**20:.1f} MiB; "
            f"per connection {per_conn[-1] / 1024:.1f} KiB"
        )

    by_type, _, api_part = split_latencies(watched)
    every = [lat for values in by_type.values() for lat in values]
    if not every:
        raise BenchError("no progress or metrics event reached a client")
    print(f"{'event latency, watched runs (ms)':<34} {'n':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}")
    for label, values in [*by_type.items(), ("progress + metrics (the target)", every)]:
        if values:
            print(quantiles_row(label, values))
    print("split (a direct Redis subscriber in the bench):")
    for label, group in (("watched", watched), ("quiet", quiet)):
        _, worker_part, _ = split_latencies(group)
        if worker_part:
            print(quantiles_row(f"  flush ts -> on Redis, {label}", worker_part))
    if api_part:
        print(quantiles_row("  on Redis -> client, watched", api_part))
    lags = [lag for run in watched for lag in run.loop_lags]
    if lags:
        print(quantiles_row(f"  bench loop lag ({LAG_TICK_S * MS:.0f} ms ticks)", lags))

    good = total = 0
    for run in watched:
        complete, problems = complete_clients(run.clients, run.logged)
        good += complete
        total += run.watchers
        print(
            f"clients complete, {run.label} (ids 1..{len(run.logged)} with no gap, ending with done): "
            f"{complete}/{run.watchers}" + (f"; others: {problems}" if problems else "")
        )
    return Figures(
        per_connection_kib=mean(per_conn) / 1024,
        p50_ms=median(every) * MS,
        p99_ms=percentile(every, 0.99) * MS,
        ratio=ratio,
        complete=good,
        clients=total,
    )


def verdict(f: Figures) -> tuple[str, bool]:
    """The last line, and whether every target was met and every stream complete."""
    met = f.p50_ms <= P50_TARGET_MS and f.p99_ms <= P99_TARGET_MS and f.ratio >= RATIO_TARGET
    ok = met and f.complete == f.clients
    line = (
        f"ratio watched/quiet steps/s = {f.ratio:.2f} (target >= {RATIO_TARGET}); event latency p50 = "
        f"{f.p50_ms:.0f} ms (target <= {P50_TARGET_MS:.0f}), p99 = {f.p99_ms:.0f} ms (target <= {P99_TARGET_MS:.0f}); "
        f"{f.per_connection_kib:.1f} KiB API RSS per connection; {f.complete}/{f.clients} clients complete; "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return line, ok


# --- main -----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are what docs/benchmarks.md reports."""
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent SSE clients on a watched run")
    parser.add_argument("--steps", type=int, default=STEPS, help="gan.train steps of each run")
    parser.add_argument("--pairs", type=int, default=PAIRS, help="(quiet, watched) pairs; the order alternates")
    parser.add_argument("--batch", type=int, default=BATCH, help="connections opened at once")
    parser.add_argument("--flush-seconds", type=float, default=FLUSH_S, help="the worker's ATELIER_METRICS_FLUSH_S")
    args = parser.parse_args(argv)
    if min(args.clients, args.batch, args.steps, args.pairs) < 1:
        parser.error("--clients, --batch, --steps and --pairs must be at least 1")
    return args


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[str, bool]:
    """Set everything up (registering its cleanup on ``stack``), measure, report; returns the verdict."""
    nofile = open_files_limit(args.clients)
    env = bench_env(stack, prefix="atelier-bench-events-")
    settings = event_settings(env.settings, flush_s=args.flush_seconds)
    bench = Bench(
        settings=settings,
        log_dir=env.log_dir,
        sessions=env.sessions,
        key=seed_tenant(env.sessions, max_active_jobs=ACTIVE_JOBS),
        params={**JOB, "steps": args.steps},
    )
    print(
        f"open-file limit {nofile}; 1 API process (EdgeProtocol, no --workers) and 1 worker, both fresh for each "
        f"run; gan.train {args.steps} steps at {JOB['image_size']} px, batch {JOB['batch_size']}, torch threads "
        f"{settings.torch_threads}; worker flush every {settings.metrics_flush_s:g} s; "
        f"{args.pairs} x (quiet, {args.clients} watchers), order alternating",
        flush=True,
    )
    warm_job = warm_up(bench, stack)
    runs: list[Run] = []
    for pair in range(args.pairs):
        order = (0, args.clients) if pair % 2 == 0 else (args.clients, 0)
        for watchers in order:
            index = len(runs) + 1
            runs.append(measure_run(bench, stack, index=index, watchers=watchers, batch=args.batch, warm_job=warm_job))
    return verdict(report(runs))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; cleans up every process, the database and the Redis db on any exit."""
    args = parse_args(argv)
    outcome = guarded_run(lambda stack: run(args, stack), header=f"load average {os.getloadavg()[0]:.1f}, ")
    if isinstance(outcome, int):
        return outcome
    (line, ok), seconds = outcome
    print(f"total {seconds:.0f} s, load average {os.getloadavg()[0]:.2f}")
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
