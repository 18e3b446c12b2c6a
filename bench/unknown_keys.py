"""Unknown-key flood: a tenant's poll latency, quiet and during a flood of unknown API keys.

Run as ``python -m bench.unknown_keys`` (``make bench-unknown-keys``). Like ``bench.api`` (whose
helpers it reuses) it needs the test Postgres and Redis, creates a fresh database and claims a
Redis db index, starts one uvicorn process on loopback with the default failed-authentication
limit (``ATELIER_UNKNOWN_KEY_RATE_PER_S``, ``ATELIER_UNKNOWN_KEY_BURST``), and removes it all on
exit, Ctrl-C included.

1. Quiet: the tenant polls ``GET /v1/jobs/{id}`` on one keep-alive connection, one poll every
   ``POLL_INTERVAL_S``, and the latency of each is recorded.
2. Flood: concurrent keep-alive clients send 2,000 requests, each with a fresh unknown key (half
   to the polling route, half to ``GET /v1/jobs``), as fast as they can, from the tenant's own
   address (127.0.0.1, as behind one NAT), while the tenant goes on polling.

The last line is the ratio p50 during the flood / p50 quiet; the exit status is 1 if it is over
the target or any poll was not answered 200.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from bench.api import (
    MS,
    BenchError,
    HttpConnection,
    api_server,
    bench_env,
    get_request,
    median,
    percentile,
    ratio_main,
    run_async,
    seed,
    wait_until_serving,
)
from tests.support import services

FLOOD_REQUESTS = 2_000
FLOOD_CLIENTS = 8  # concurrent keep-alive connections sending the flood
FLOOD_TIMEOUT_S = 60.0  # the flood stops here even if not all requests were sent
POLL_INTERVAL_S = 0.01  # the tenant's polling period
QUIET_POLLS = 200
WARMUP_POLLS = 20
RATIO_TARGET = 2.0  # p50 during the flood / p50 quiet, at most
FLOOD_PATHS = ("job", "list")  # the flood alternates the polling route and the listing route
ANSWERED = 401
REFUSED = 429


@dataclass
class FloodResult:
    """What the flood's requests got, and how long they took to send."""

    statuses: collections.Counter[int]
    elapsed_s: float

    @property
    def sent(self) -> int:
        """Requests answered."""
        return sum(self.statuses.values())


async def poll(conn: HttpConnection, raw: bytes, *, count: int | None, until: asyncio.Event | None) -> list[float]:
    """Poll every POLL_INTERVAL_S, ``count`` times or until ``until`` is set; latencies in seconds."""
    latencies: list[float] = []
    while (count is None or len(latencies) < count) and (until is None or not until.is_set()):
        sent = time.perf_counter()
        status = await conn.request(raw)
        latencies.append(time.perf_counter() - sent)
        if status != 200:
            raise BenchError(f"a poll of the tenant's job was answered {status}")
        await asyncio.sleep(POLL_INTERVAL_S)
    return latencies


async def flood(port: int, job_id: uuid.UUID, *, requests: int, clients: int, timeout_s: float) -> FloodResult:
    """``requests`` requests with fresh unknown keys from ``clients`` connections at once."""
    paths = {"job": f"/v1/jobs/{job_id}", "list": "/v1/jobs"}
    pending = collections.deque(
        get_request(paths[FLOOD_PATHS[i % len(FLOOD_PATHS)]], port, {"Authorization": f"Bearer atl_{uuid.uuid4().hex}"})
        for i in range(requests)
    )
    statuses: collections.Counter[int] = collections.Counter()
    conns = [await HttpConnection.open(port) for _ in range(clients)]
    deadline = time.perf_counter() + timeout_s

    async def drive(conn: HttpConnection) -> None:
        while pending and time.perf_counter() < deadline:
            statuses[await conn.request(pending.popleft())] += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(drive(conn) for conn in conns))
    finally:
        for conn in conns:
            await conn.close()
    return FloodResult(statuses, time.perf_counter() - started)


@dataclass
class Measured:
    """Poll latencies quiet, during the flood and after it, and the flood itself."""

    quiet_s: list[float]
    flood_s: list[float]
    after_s: list[float]
    flood: FloodResult


async def measure(port: int, raw_poll: bytes, job_id: uuid.UUID, args: argparse.Namespace) -> Measured:
    """Warm up, poll quietly, then poll during the flood, then quietly again."""
    poller = await HttpConnection.open(port)
    try:
        await poll(poller, raw_poll, count=WARMUP_POLLS, until=None)
        quiet = await poll(poller, raw_poll, count=args.quiet_polls, until=None)
        done = asyncio.Event()

        async def flood_then_stop() -> FloodResult:
            try:
                return await flood(
                    port, job_id, requests=args.requests, clients=args.clients, timeout_s=FLOOD_TIMEOUT_S
                )
            finally:
                done.set()

        flooded, during = await asyncio.gather(flood_then_stop(), poll(poller, raw_poll, count=None, until=done))
        after = await poll(poller, raw_poll, count=args.quiet_polls, until=None)
    finally:
        await poller.close()
    return Measured(quiet, during, after, flooded)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are what docs/benchmarks.md reports."""
    parser = argparse.ArgumentParser(prog="python -m bench.unknown_keys", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=FLOOD_REQUESTS, help="unknown-key requests in the flood")
    parser.add_argument("--clients", type=int, default=FLOOD_CLIENTS, help="concurrent flood connections")
    parser.add_argument("--quiet-polls", type=int, default=QUIET_POLLS, help="polls measured before and after")
    parser.add_argument(
        "--unknown-key-rate", type=float, default=None, help="ATELIER_UNKNOWN_KEY_RATE_PER_S (default: the setting's)"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, stack: contextlib.ExitStack[None]) -> tuple[float, bool]:
    """Set everything up (registering its cleanup on ``stack``), measure, report; returns (ratio, all good)."""
    env = bench_env(stack, prefix="atelier-bench-keys-")
    settings = env.settings
    if args.unknown_key_rate is not None:
        settings = settings.model_copy(update={"unknown_key_rate_per_s": args.unknown_key_rate})
    key, job_id = seed(env.sessions, max_attempts=settings.max_attempts)
    port = services.free_port()
    server = api_server(settings, env.log_dir, port)
    stack.callback(server.stop)
    try:
        server.start()
        wait_until_serving(server, port)
        raw_poll = get_request(f"/v1/jobs/{job_id}", port, {"Authorization": f"Bearer {key}"})
        print(
            f"failed-authentication limit: {settings.unknown_key_rate_per_s:g}/s per address, burst "
            f"{settings.unknown_key_burst}; read cache {settings.job_read_cache_s:g} s; a poll every "
            f"{POLL_INTERVAL_S * MS:g} ms; flood: {args.requests} unknown keys from {args.clients} connections",
            flush=True,
        )
        result = run_async(lambda: measure(port, raw_poll, job_id, args))
    except Exception:
        print(f"--- {server.name} log (tail) ---\n{server.log()[-3000:]}", file=sys.stderr)
        raise
    flooded = result.flood
    others = {s: n for s, n in flooded.statuses.items() if s not in (ANSWERED, REFUSED)}
    print(f"{'polls':<14} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for label, values in (("quiet", result.quiet_s), ("during flood", result.flood_s), ("after", result.after_s)):
        print(
            f"{label:<14} {len(values):>6} {median(values) * MS:>8.2f} {percentile(values, 0.95) * MS:>8.2f} "
            f"{max(values) * MS:>8.2f}"
        )
    print(
        f"flood: {flooded.sent} of {args.requests} sent in {flooded.elapsed_s:.2f} s "
        f"({flooded.sent / flooded.elapsed_s:.0f} rps); {flooded.statuses[REFUSED]} got 429, "
        f"{flooded.statuses[ANSWERED]} got 401" + (f", others: {others}" if others else "")
    )
    ratio = median(result.flood_s) / median(result.quiet_s)
    return ratio, not others and flooded.sent == args.requests


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 if the ratio is over the target or the run went wrong."""
    args = parse_args(argv)
    return ratio_main(lambda stack: run(args, stack), label="p50_flood / p50_quiet", target=RATIO_TARGET)


if __name__ == "__main__":
    sys.exit(main())
