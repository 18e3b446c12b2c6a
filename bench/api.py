"""API benchmark: GET /v1/jobs/{id} against a bare endpoint of the same server, and queue latency.

Run as ``python -m bench.api`` (``make bench-api``). It needs the Postgres and Redis the tests
use (127.0.0.1:5432 and :6379). It creates a fresh database and claims a Redis db index, starts
one uvicorn process (``bench.app:create_bench_app``) and one Celery worker on the ``gpu`` queue,
and removes all of them on exit, Ctrl-C included.

1. Throughput: a fixed number of keep-alive connections hammer one endpoint at a time, in
   interleaved rounds (bare, job, bare, job, ...), so drift from other load on the machine
   hits both alike. The client is a minimal HTTP/1.1 client on asyncio (uvloop when present):
   a full client such as httpx costs more CPU per request than the bare endpoint does and, on
   two shared cores, would cap the reference and flatter the ratio.
2. Queue latency: small gan.train jobs submitted one at a time to a warm worker; latency is
   ``started_at - created_at`` of the job row (both Postgres ``now()``, so one clock), plus
   what the client saw: POST sent to the first poll that no longer says ``queued``.

The last line printed states the ratios against the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from bench.app import BARE_PATH, BARE_SYNC_PATH
from bench.machine import cpu_model
from shared.config import Settings
from shared.db import queries
from shared.db.migrate import upgrade
from shared.db.models import Job
from shared.db.session import make_engine, make_sessionmaker, transaction
from shared.jobs.params import QUEUE_GPU
from shared.jobs.states import JobState
from tests.support import services

# --- throughput -----------------------------------------------------------------------
CONCURRENCY = 8  # keep-alive connections, all on one endpoint at a time
ROUNDS = 5  # each round measures every endpoint once
PHASE_S = 3.0  # seconds per endpoint per round
WARMUP_S = 1.0  # per endpoint, before the first round; not counted
RATIO_TARGET = 0.5  # get_job rps / bare rps, at least
HOST = "127.0.0.1"
# The rate limit is checked on every request (tokens leased 10 at a time, as at the default rate), never hit.
BENCH_RATE_LIMIT_PER_S = 1_000_000.0
BENCH_RATE_LIMIT_BURST = 1_000_000
READ_LIMIT = 1 << 20  # bytes a response head or body may take in the client's buffer

# --- queue latency --------------------------------------------------------------------
QUEUE_JOBS = 20
QUEUE_P50_TARGET_MS = 100.0
FAST_POLL_S = 0.01  # while a job is queued: the resolution of the client-observed latency; each poll costs API CPU
SLOW_POLL_S = 0.05  # once it runs, until it finishes
JOB_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
WORKER_READY_TIMEOUT_S = 120.0
SMALLEST_GAN = {
    "dataset": "digits",
    "steps": 1,
    "batch_size": 8,
    "image_size": 16,
    "nz": 8,
    "ngf": 8,
    "ndf": 8,
}

# --- processes ------------------------------------------------------------------------
SERVER_READY_TIMEOUT_S = 60.0
SETUP_POOL_SIZE = 1  # the bench's own DB connections: seeding and reading timestamps
SERVER_APP = "bench.app:create_bench_app"
WORKER_NAME = "bench-gpu"
LOG_TAIL_CHARS = 3000
EXIT_INTERRUPTED = 130  # what a shell reports for a Ctrl-C
T = TypeVar("T")
MS = 1000.0
TERMINAL_STATES = {JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value}

# The job the throughput phase reads: finished, with the fields a poller usually sees filled in.
POLLED_JOB_METRICS = {"d_loss": 0.693, "g_loss": 2.31, "d_x": 0.52, "d_g_z1": 0.47, "d_g_z2": 0.41}
POLLED_JOB_STEPS = 2000


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


# --- statistics -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    if not values:
        raise BenchError("no samples")
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The nearest-rank median."""
    return percentile(values, 0.5)


# --- a minimal keep-alive HTTP/1.1 client ------------------------------------------------


class HttpConnection:
    """One keep-alive connection that sends prepared GET requests and reads whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        """Connect to the server on loopback."""
        reader, writer = await asyncio.open_connection(HOST, port, limit=READ_LIMIT)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> int:
        """Send one request; return its status once the whole body has been read."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = _content_length(head)
        if length:
            await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        """Close the connection."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    raise BenchError(f"response without Content-Length: {head[:200]!r}")


def get_request(path: str, port: int, headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a keep-alive GET request."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: application/json"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class Phase:
    """What one endpoint did during one timed phase."""

    requests: int
    elapsed_s: float
    latencies_s: list[float]
    errors: int

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.elapsed_s


async def run_phase(conns: Sequence[HttpConnection], raw: bytes, duration_s: float) -> Phase:
    """Every connection sends ``raw`` back to back for ``duration_s``."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s

    async def drive(conn: HttpConnection) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                status = await conn.request(raw)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                raise BenchError(f"the server dropped a connection ({type(exc).__name__}); see its log") from None
            latencies.append(time.perf_counter() - sent)
            if status != 200:
                errors += 1

    start = time.perf_counter()
    await asyncio.gather(*(drive(conn) for conn in conns))
    return Phase(len(latencies), time.perf_counter() - start, latencies, errors)


@dataclass
class EndpointResult:
    """Every counted phase of one endpoint."""

    name: str
    phases: list[Phase]

    @property
    def requests(self) -> int:
        """Requests completed in all rounds."""
        return sum(p.requests for p in self.phases)

    @property
    def rps(self) -> float:
        """Requests per second over all rounds."""
        return self.requests / sum(p.elapsed_s for p in self.phases)

    @property
    def errors(self) -> int:
        """Non-200 responses in all rounds."""
        return sum(p.errors for p in self.phases)

    def latency_ms(self, q: float) -> float:
        """A latency quantile over all rounds, in milliseconds."""
        return percentile([lat for p in self.phases for lat in p.latencies_s], q) * MS


async def measure_throughput(
    port: int, endpoints: dict[str, bytes], *, concurrency: int, rounds: int, phase_s: float
) -> dict[str, EndpointResult]:
    """Warm every endpoint, then measure them in interleaved rounds on shared connections."""
    conns = [await HttpConnection.open(port) for _ in range(concurrency)]
    try:
        for raw in endpoints.values():
            warm = await run_phase(conns, raw, WARMUP_S)
            if warm.errors:
                raise BenchError(f"{warm.errors} non-200 responses while warming up {raw[:60]!r}")
        results = {name: EndpointResult(name, []) for name in endpoints}
        for _ in range(rounds):
            for name, raw in endpoints.items():
                results[name].phases.append(await run_phase(conns, raw, phase_s))
        return results
    finally:
        for conn in conns:
            await conn.close()


def run_async(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())


# --- queue latency ----------------------------------------------------------------------


@dataclass
class QueueResult:
    """Per-job latencies of the sequential jobs, in milliseconds."""

    db_ms: list[float]  # started_at - created_at
    api_ms: list[float]  # created_at -> enqueued_at: the API's commit and send
    pickup_ms: list[float]  # enqueued_at -> started_at: Redis, the worker, the claim
    post_ms: list[float]  # POST sent -> its response read
    observed_ms: list[float]  # POST sent -> first poll not saying queued
    done_ms: list[float]  # POST sent -> first poll saying succeeded


@dataclass(frozen=True)
class Submitted:
    """One job as the client saw it, in seconds after the POST was sent."""

    job_id: uuid.UUID
    post_s: float
    running_s: float
    done_s: float


def submit_and_wait(client: httpx.Client) -> Submitted:
    """Submit one small job and poll it until it succeeds."""
    sent = time.perf_counter()
    response = client.post("/v1/jobs", json={"type": "gan.train", "params": SMALLEST_GAN})
    posted = time.perf_counter() - sent
    if response.status_code != 201:
        raise BenchError(f"submit failed: {response.status_code} {response.text}")
    job_id = response.json()["id"]
    observed: float | None = None
    deadline = sent + JOB_TIMEOUT_S
    while time.perf_counter() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        now = time.perf_counter()
        if observed is None and job["state"] != JobState.QUEUED.value:
            observed = now - sent
        if job["state"] in TERMINAL_STATES:
            if job["state"] != JobState.SUCCEEDED.value:
                raise BenchError(f"job {job_id} ended {job['state']}: {job['error']}")
            assert observed is not None
            return Submitted(uuid.UUID(job_id), posted, observed, now - sent)
        time.sleep(FAST_POLL_S if observed is None else SLOW_POLL_S)
    raise BenchError(f"job {job_id} did not finish within {JOB_TIMEOUT_S}s")


def measure_queue(base_url: str, key: str, sessions: sessionmaker[Session], *, jobs: int) -> QueueResult:
    """One warm-up job, then ``jobs`` jobs one after another; latencies from the rows and the client."""
    seen: dict[uuid.UUID, Submitted] = {}
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=HTTP_TIMEOUT_S) as client:
        submit_and_wait(client)  # the first job imports the dataset and builds what later jobs reuse
        for _ in range(jobs):
            job = submit_and_wait(client)
            seen[job.job_id] = job
    with sessions() as session:
        rows = session.execute(
            select(Job.id, Job.created_at, Job.enqueued_at, Job.started_at).where(Job.id.in_(list(seen)))
        ).all()
    result = QueueResult([], [], [], [], [], [])
    for row in rows:
        if row.started_at is None or row.enqueued_at is None:
            raise BenchError(f"job {row.id} lacks enqueued_at or started_at")
        result.db_ms.append((row.started_at - row.created_at).total_seconds() * MS)
        result.api_ms.append((row.enqueued_at - row.created_at).total_seconds() * MS)
        result.pickup_ms.append((row.started_at - row.enqueued_at).total_seconds() * MS)
        result.post_ms.append(seen[row.id].post_s * MS)
        result.observed_ms.append(seen[row.id].running_s * MS)
        result.done_ms.append(seen[row.id].done_s * MS)
    return result


# --- setup --------------------------------------------------------------------------------


def bench_settings(root: Path, database_url: str, redis_url: str) -> Settings:
    """Settings for the server and the worker: local storage, CPU, one torch thread."""
    return Settings(
        environment="test",
        data_dir=root / "data",
        database_url=database_url,
        redis_url=redis_url,
        storage_backend="local",
        storage_dir=root / "objects",
        device="cpu",
        torch_threads=1,
        allow_weight_download=False,
        # The limiter runs on every request, as in production, but never refuses one here.
        rate_limit_per_s=BENCH_RATE_LIMIT_PER_S,
        rate_limit_burst=BENCH_RATE_LIMIT_BURST,
    )


def seed(sessions: sessionmaker[Session], *, max_attempts: int) -> tuple[str, uuid.UUID]:
    """A tenant, its API key and one finished job to poll; returns (raw key, job id)."""
    with transaction(sessions) as session:
        tenant = queries.create_tenant(session, name=f"bench-{uuid.uuid4().hex[:8]}")
        _row, raw = queries.create_api_key(session, tenant_id=tenant.id, label="bench")
        job, _created = queries.create_job(
            session,
            tenant_id=tenant.id,
            job_type="gan.train",
            params={**SMALLEST_GAN, "steps": POLLED_JOB_STEPS},
            queue=QUEUE_GPU,
            total=POLLED_JOB_STEPS,
            max_attempts=max_attempts,
            idempotency_key=None,
        )
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(
                state=JobState.SUCCEEDED.value,
                attempt=1,
                lease_owner=f"{WORKER_NAME}@bench",
                progress_step=POLLED_JOB_STEPS,
                latest_metrics=POLLED_JOB_METRICS,
                checkpoint_step=POLLED_JOB_STEPS,
                started_at=Job.created_at,
                finished_at=Job.created_at,
            )
        )
        return raw, job.id


def api_server(settings: Settings, log_dir: Path, port: int) -> services.Proc:
    """One uvicorn process, one worker, no access log, serving the bench app."""
    argv = [
        sys.executable, "-m", "uvicorn", SERVER_APP, "--factory", "--host", HOST, "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return services.Proc(name="api", argv=argv, env=services.settings_env(settings), log_path=log_dir / "api.log")


def wait_until_serving(server: services.Proc, port: int, path: str = BARE_PATH) -> None:
    """Block until the server answers 200 at ``path`` (the bench app's bare endpoint by default)."""
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            raise BenchError(f"the API exited with {server.proc.returncode}:\n{server.log()[-LOG_TAIL_CHARS:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{HOST}:{port}{path}", timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"the API did not answer within {SERVER_READY_TIMEOUT_S}s:\n{server.log()[-LOG_TAIL_CHARS:]}")


def _interrupt(_signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt


# --- report -------------------------------------------------------------------------------


def print_throughput(results: dict[str, EndpointResult], reference: str) -> None:
    """One line per endpoint, then the per-round ratios against the reference."""
    print(f"{'endpoint':<10} {'requests':>9} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
    base = results[reference]
    for name, result in results.items():
        print(
            f"{name:<10} {result.requests:>9} {result.rps:>8.0f} {result.latency_ms(0.5):>8.2f} "
            f"{result.latency_ms(0.99):>8.2f} {result.rps / base.rps:>6.2f}"
        )
    for name, result in results.items():
        if name != reference:
            per_round = [p.rps / b.rps for p, b in zip(result.phases, base.phases, strict=True)]
            print(f"  {name}/{reference} per round: " + " ".join(f"{r:.2f}" for r in per_round))


def print_queue(result: QueueResult) -> None:
    """p50/p95 of each queue latency measure."""
    print(f"{'queue latency (ms)':<44} {'p50':>7} {'p95':>7} {'max':>7}")
    rows = [
        ("started_at - created_at (DB)", result.db_ms),
        ("  created_at -> enqueued_at (API)", result.api_ms),
        ("  enqueued_at -> started_at (broker+worker)", result.pickup_ms),
        ("POST -> response (client)", result.post_ms),
        ("POST -> first poll not queued (client)", result.observed_ms),
        ("POST -> first poll succeeded (client)", result.done_ms),
    ]
    for label, values in rows:
        print(f"{label:<44} {median(values):>7.1f} {percentile(values, 0.95):>7.1f} {max(values):>7.1f}")


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are what docs/benchmarks.md reports."""
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="keep-alive connections")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved rounds")
    parser.add_argument("--phase-seconds", type=float, default=PHASE_S, help="seconds per endpoint per round")
    parser.add_argument("--jobs", type=int, default=QUEUE_JOBS, help="sequential jobs for queue latency")
    parser.add_argument(
        "--breakdown", action="store_true", help="also measure a bare sync (threadpool) endpoint, for diagnosis"
    )
    return parser.parse_args(argv)


@dataclass(frozen=True)
class BenchEnv:
    """A bench's private world: temp dir, migrated database, Redis db, settings and sessions."""

    root: Path
    log_dir: Path
    settings: Settings
    sessions: sessionmaker[Session]


def bench_env(stack: contextlib.ExitStack, *, prefix: str) -> BenchEnv:
    """Create it all, registering every cleanup on ``stack``."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    db_name, db_url = services.create_database()
    stack.callback(services.drop_database, db_name)
    redis_url = services.claim_redis_db()
    stack.callback(services.release_redis_db, redis_url)
    settings = bench_settings(root, db_url, redis_url)
    upgrade(settings)
    engine = make_engine(settings, pool_size=SETUP_POOL_SIZE)
    stack.callback(engine.dispose)
    return BenchEnv(root, root / "logs", settings, make_sessionmaker(engine))


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> str:
    """Set everything up (registering its cleanup on ``stack``), measure, report; returns the verdict."""
    env = bench_env(stack, prefix="atelier-bench-")
    log_dir, settings, sessions = env.log_dir, env.settings, env.sessions
    key, job_id = seed(sessions, max_attempts=settings.max_attempts)

    port = services.free_port()
    server = api_server(settings, log_dir, port)
    stack.callback(server.stop)
    worker = services.celery_worker(settings, log_dir, WORKER_NAME, queues=QUEUE_GPU)
    stack.callback(worker.stop)
    try:
        server.start()
        wait_until_serving(server, port)
        auth = {"Authorization": f"Bearer {key}"}
        endpoints = {"bare": get_request(BARE_PATH, port)}
        if args.breakdown:
            endpoints["bare-sync"] = get_request(BARE_SYNC_PATH, port)
        endpoints["get_job"] = get_request(f"/v1/jobs/{job_id}", port, auth)
        print(
            f"throughput: {args.concurrency} keep-alive connections, {args.rounds} rounds x "
            f"{args.phase_seconds:g} s per endpoint, interleaved",
            flush=True,
        )
        results = run_async(
            lambda: measure_throughput(
                port, endpoints, concurrency=args.concurrency, rounds=args.rounds, phase_s=args.phase_seconds
            )
        )
        errors = {name: r.errors for name, r in results.items() if r.errors}
        if errors:
            raise BenchError(f"non-200 responses: {errors}")
        print_throughput(results, "bare")
        ratio = results["get_job"].rps / results["bare"].rps

        print(f"queue latency: one warm gpu worker, 1 warm-up job + {args.jobs} sequential jobs", flush=True)
        worker.start()
        worker.wait_for_log("ready.", timeout=WORKER_READY_TIMEOUT_S)
        queue = measure_queue(f"http://{HOST}:{port}", key, sessions, jobs=args.jobs)
        print_queue(queue)
    except Exception:
        for proc in (server, worker):
            print(f"--- {proc.name} log (tail) ---\n{proc.log()[-LOG_TAIL_CHARS:]}", file=sys.stderr)
        raise
    p50 = median(queue.db_ms)
    p95 = percentile(queue.db_ms, 0.95)
    return (
        f"ratio get_job/bare rps = {ratio:.2f} (target >= {RATIO_TARGET}); "
        f"queue p50 = {p50:.0f} ms, p95 = {p95:.0f} ms, p50/target = {p50 / QUEUE_P50_TARGET_MS:.2f} "
        f"(target p50 <= {QUEUE_P50_TARGET_MS:.0f} ms)"
    )


def guarded_main(run_fn: Callable[[contextlib.ExitStack[None]], int]) -> int:
    """``guarded_run`` for a benchmark whose run returns its exit status; prints how long it took."""
    outcome = guarded_run(run_fn, header="")
    if isinstance(outcome, int):
        return outcome
    status, seconds = outcome
    print(f"done in {seconds:.0f} s", flush=True)
    return status


def guarded_run(run_fn: Callable[[contextlib.ExitStack[None]], T], *, header: str) -> tuple[T, float] | int:
    """Print ``header``, run ``run_fn`` with an ExitStack that stops everything it started on any
    exit (SIGTERM and Ctrl-C included); returns (its result, seconds) or an exit status."""
    signal.signal(signal.SIGTERM, _interrupt)
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}), {header}Python {platform.python_version()}, pid {os.getpid()}",
        flush=True,
    )
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            result = run_fn(stack)
        except BenchError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("interrupted; stopping what the benchmark started", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            # A second Ctrl-C must not cut the cleanup short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return result, time.perf_counter() - started


def ratio_main(run_fn: Callable[[contextlib.ExitStack[None]], tuple[float, bool]], *, label: str, target: float) -> int:
    """Run a bench whose ``run_fn`` returns (ratio, all good); print the ratio last; 1 if over ``target`` or not good."""
    outcome = guarded_run(run_fn, header="")
    if isinstance(outcome, int):
        return outcome
    (ratio, complete), seconds = outcome
    print(f"total {seconds:.0f} s")
    print(f"ratio {label} = {ratio:.2f} (target <= {target:g})")
    return 0 if complete and ratio <= target else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; cleans up every process, the database and the Redis db on any exit."""
    args = parse_args(argv)
    outcome = guarded_run(lambda stack: run(args, stack), header="")
    if isinstance(outcome, int):
        return outcome
    verdict, seconds = outcome
    print(f"total {seconds:.0f} s")
    print(verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
