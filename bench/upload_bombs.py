"""Upload bombs: a tenant's poll latency, quiet and while another tenant sends archive bombs ten at a time.

Run as ``python -m bench.upload_bombs`` (``make bench-upload-bombs``). Like ``bench.api`` (whose
helpers it reuses) it needs the test Postgres and Redis, creates a fresh database and claims a
Redis db index, starts one uvicorn process on loopback with the default upload settings (200 MB
bodies, 1 GiB unpacked, a 256 MiB memory budget per upload, 4 uploads unpacked at once per process
and 2 per tenant) and local storage, and removes it all on exit, Ctrl-C included.

1. Quiet: the legitimate tenant polls ``GET /v1/jobs/{id}`` on one keep-alive connection, one poll
   every ``POLL_INTERVAL_S``, and the latency of each is recorded.
2. Bombs: the attacker sends waves of ten uploads at once (each on its own connection; the next
   wave when the last answer of this one is in), for ``--waves`` waves, while the tenant goes on
   polling. A wave holds two of each: a tar.xz and a tar.gz of one 1,000 MiB zero member, a zip
   whose header declares 100 B for 1,000 MiB of zeros, a zip within the 200x ratio that unpacks to
   500 MB, and a tar.xz of 125 zero members of 8 MiB (tests/support/bombs.py builds them).
3. After: quiet polls again.

The API's peak RSS during the bombs is read from /proc (VmHWM, reset at the start). The last line
is the ratio p50 during the bombs / p50 quiet; the exit status is 1 if it is over the target, if a
poll was not answered 200, or if a bomb got anything but a 4xx.
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
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from bench.api import (
    HOST,
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
from shared.db import queries
from shared.db.session import transaction
from tests.support import services
from tests.support.bombs import MIB, deflated_zeros, noise_png, stored, tar_of_zeros, zip_archive

WAVE = 10
WAVES = 5
POLL_INTERVAL_S = 0.01  # the tenant's polling period
QUIET_POLLS = 200
WARMUP_POLLS = 20
RATIO_TARGET = 2.0  # p50 during the bombs / p50 quiet, at most
BOMB_TIMEOUT_S = 300.0
NOISE_SIDE = (1000, 1100)  # a 3.3 MB random PNG: keeps the zip of zeros within the ratio limit
REFUSED = 429
CLIENT_ERRORS = range(400, 500)
KIB = 1024


def bombs() -> dict[str, bytes]:
    """The five kinds of bomb in a wave, by file name."""
    noise = stored("noise.png", noise_png(*NOISE_SIDE))
    return {
        "big.tar.xz": tar_of_zeros([("big.png", 1000 * MIB)], "xz"),
        "big.tar.gz": tar_of_zeros([("big.png", 1000 * MIB)], "gz"),
        "liar.zip": zip_archive([deflated_zeros("zeros.png", 1000 * MIB, declared=100)]),
        "legal.zip": zip_archive([noise] + [deflated_zeros(f"z{i:02d}.png", 50 * MIB) for i in range(10)]),
        "many.tar.xz": tar_of_zeros([(f"z{i:03d}.png", 8 * MIB) for i in range(125)], "xz"),
    }


def upload_request(name: str, data: bytes, port: int, key: str) -> bytes:
    """The bytes of a keep-alive multipart POST /v1/uploads of one file."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /v1/uploads HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class PeakRss:
    """A process's resident set: VmHWM reset through /proc/<pid>/clear_refs, then read back."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = 0

    def _kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise BenchError(f"{key} not in /proc/{self.pid}/status")

    def reset(self) -> None:
        """Start a new peak from the current resident set."""
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.baseline = self._kib("VmRSS") * KIB

    def peak(self) -> int:
        """The peak since the reset, in bytes."""
        return self._kib("VmHWM") * KIB


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


async def send_waves(port: int, wave: list[tuple[str, bytes]], *, waves: int) -> collections.Counter[tuple[str, int]]:
    """``waves`` times: every request of ``wave`` at once, each on a new connection; (name, status) counts."""
    statuses: collections.Counter[tuple[str, int]] = collections.Counter()

    async def send(name: str, raw: bytes) -> None:
        conn = await HttpConnection.open(port)
        try:
            statuses[name, await asyncio.wait_for(conn.request(raw), BOMB_TIMEOUT_S)] += 1
        finally:
            await conn.close()

    for _ in range(waves):
        await asyncio.gather(*(send(name, raw) for name, raw in wave))
    return statuses


@dataclass
class Measured:
    """Poll latencies quiet, during the bombs and after them; what the bombs got; the API's memory."""

    quiet_s: list[float]
    bombs_s: list[float]
    after_s: list[float]
    statuses: collections.Counter[tuple[str, int]]
    elapsed_s: float
    rss_baseline: int
    rss_peak: int


async def measure(
    port: int, raw_poll: bytes, wave: list[tuple[str, bytes]], rss: PeakRss, args: argparse.Namespace
) -> Measured:
    """Warm up, poll quietly, then poll during the waves of bombs, then quietly again."""
    poller = await HttpConnection.open(port)
    try:
        await poll(poller, raw_poll, count=WARMUP_POLLS, until=None)
        quiet = await poll(poller, raw_poll, count=args.quiet_polls, until=None)
        done = asyncio.Event()
        rss.reset()
        started = time.perf_counter()

        async def bomb_then_stop() -> collections.Counter[tuple[str, int]]:
            try:
                return await send_waves(port, wave, waves=args.waves)
            finally:
                done.set()

        statuses, during = await asyncio.gather(bomb_then_stop(), poll(poller, raw_poll, count=None, until=done))
        elapsed = time.perf_counter() - started
        peak = rss.peak()
        after = await poll(poller, raw_poll, count=args.quiet_polls, until=None)
    finally:
        await poller.close()
    return Measured(quiet, during, after, statuses, elapsed, rss.baseline, peak)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are what docs/benchmarks.md reports."""
    parser = argparse.ArgumentParser(prog="python -m bench.upload_bombs", description=__doc__.splitlines()[0])
    parser.add_argument("--waves", type=int, default=WAVES, help="waves of ten bombs, one after another")
    parser.add_argument("--quiet-polls", type=int, default=QUIET_POLLS, help="polls measured before and after")
    return parser.parse_args(argv)


def attacker_key(sessions: sessionmaker[Session]) -> str:
    """A second tenant, the one sending the bombs; returns its raw key."""
    with transaction(sessions) as session:
        tenant = queries.create_tenant(session, name=f"bench-bombs-{uuid.uuid4().hex[:8]}")
        _row, raw = queries.create_api_key(session, tenant_id=tenant.id, label="bombs")
        return raw


def run(args: argparse.Namespace, stack: contextlib.ExitStack[None]) -> tuple[float, bool]:
    """Set everything up (registering its cleanup on ``stack``), measure, report; returns (ratio, all good)."""
    env = bench_env(stack, prefix="atelier-bench-bombs-")
    settings = env.settings
    key, job_id = seed(env.sessions, max_attempts=settings.max_attempts)
    bomber = attacker_key(env.sessions)
    port = services.free_port()
    server = api_server(settings, env.log_dir, port)
    stack.callback(server.stop)
    built = bombs()
    wave = [(name, upload_request(name, data, port, bomber)) for name, data in built.items()] * (WAVE // len(built))
    try:
        server.start()
        wait_until_serving(server, port)
        assert server.proc is not None
        raw_poll = get_request(f"/v1/jobs/{job_id}", port, {"Authorization": f"Bearer {key}"})
        print(
            f"uploads: {settings.upload_memory_budget_bytes // MIB} MiB memory budget each, "
            f"{settings.upload_unpack_concurrency} unpacked at once ({settings.upload_unpack_per_tenant} per tenant), "
            f"{settings.max_unpacked_bytes // MIB} MiB unpacked, ratio {settings.max_compression_ratio:g}x; "
            f"a poll every {POLL_INTERVAL_S * MS:g} ms; {args.waves} waves of {len(wave)} bombs from one tenant",
            flush=True,
        )
        for name, data in built.items():
            print(f"  {name:<12} {len(data):>9} bytes", flush=True)
        result = run_async(lambda: measure(port, raw_poll, wave, PeakRss(server.proc.pid), args))  # type: ignore[union-attr]
    except Exception:
        print(f"--- {server.name} log (tail) ---\n{server.log()[-3000:]}", file=sys.stderr)
        raise
    print(f"{'polls':<14} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for label, values in (("quiet", result.quiet_s), ("during bombs", result.bombs_s), ("after", result.after_s)):
        print(
            f"{label:<14} {len(values):>6} {median(values) * MS:>8.2f} {percentile(values, 0.95) * MS:>8.2f} "
            f"{max(values) * MS:>8.2f}"
        )
    sent = sum(result.statuses.values())
    print(f"bombs: {sent} in {result.elapsed_s:.1f} s")
    for (name, status), count in sorted(result.statuses.items()):
        print(f"  {name:<12} {status}: {count}")
    print(
        f"API RSS: {result.rss_baseline / MIB:.0f} MiB at the start, peak {result.rss_peak / MIB:.0f} MiB "
        f"(+{(result.rss_peak - result.rss_baseline) / MIB:.0f} MiB)"
    )
    all_refused = all(status in CLIENT_ERRORS for _name, status in result.statuses)
    ratio = median(result.bombs_s) / median(result.quiet_s)
    return ratio, all_refused and sent == args.waves * len(wave)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 if the ratio is over the target or the run went wrong."""
    args = parse_args(argv)
    return ratio_main(lambda stack: run(args, stack), label="p50_bombs / p50_quiet", target=RATIO_TARGET)


if __name__ == "__main__":
    sys.exit(main())
