"""Claim throughput on the real Postgres: 64 concurrent claimers through the fair-share claim.

Run as ``python -m bench.claims`` (``make bench-claims``). It needs the Postgres the tests use
(127.0.0.1:5432) and creates, then drops, a database of its own.

Seeded (both queues alike): ``--tenants`` tenants whose queued jobs follow a Zipf law (the biggest has the
most), ``--queued`` queued jobs per queue, and ``--history`` finished attempts inside the fair-share window,
so the usage aggregate reads a realistic history. Then, on each queue in turn, ``--claimers`` threads (one
connection each) loop: claim, then end the job at once (the UPDATE the runner's finish makes), until
``--claims`` claims are made.

- **Reference:** the claim before fair share, ``queries.claim_job`` on the next job id in first-come order
  (the Celery message named it): one indexed UPDATE.
- **Fair share:** ``queries.claim_next``, the production claim: the tenant order (usage per weight in the
  window, running limits), the tenant's next job by priority ``FOR UPDATE SKIP LOCKED``, then the same UPDATE.

Reported per side: claims/s, p50 and p99 claim latency (the claim's transaction, commit included), and
the double claims (a job claimed twice, or at an attempt above 1): 0 is required. The last lines say what
the fair-share rate supports (``claims/s x job length`` workers, each worker claiming once a job) and the
ratio of the two rates. Exit status 1 on any double claim or when it could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bench.api import BenchError, guarded_main, median, percentile
from bench.fair_sim import end_run
from shared.config import Settings
from shared.db import queries
from shared.db.migrate import upgrade
from shared.db.session import make_engine, make_sessionmaker, transaction
from tests.support import services

CLAIMERS = 64
TENANTS = 100
QUEUED = 20_000
HISTORY = 50_000
CLAIMS = 5_000
ZIPF_S = 1.1
WINDOW_S = 3600.0
LEASE_S = 600.0
JOB_LENGTHS_S = (60.0, 600.0)  # what the measured rate supports, for jobs this long
CALL_DEADLINE_S = 60.0
MS = 1000.0
REFERENCE_QUEUE, FAIR_QUEUE = "bench-ref", "bench-fair"


@dataclass(frozen=True)
class Side:
    """One side's measurement."""

    name: str
    claims: int
    seconds: float
    latencies_s: list[float]
    doubles: int

    @property
    def rate(self) -> float:
        """Claims per second."""
        return self.claims / self.seconds


def seed(sessions: sessionmaker[Session], *, tenants: int, queued: int, history: int, rng: random.Random) -> None:
    """Tenants, and on both queues the same Zipf-shaped backlog and finished history."""
    weights = [1.0 / (rank + 1) ** ZIPF_S for rank in range(tenants)]
    ids = [uuid.uuid4() for _ in range(tenants)]
    backlog = rng.choices(ids, weights=weights, k=queued)
    past = rng.choices(ids, weights=weights, k=history)
    with transaction(sessions) as session:
        session.execute(
            text("INSERT INTO tenants (id, name) VALUES (:id, :name)"),
            [{"id": t, "name": f"bench-{t.hex[:12]}"} for t in ids],
        )
        for queue in (REFERENCE_QUEUE, FAIR_QUEUE):
            session.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, type, params, queue, state, progress_total, priority, "
                    "created_at) VALUES (gen_random_uuid(), :tenant, 'bench.job', '{}'::jsonb, :queue, 'queued', 1, "
                    ":priority, now() - make_interval(secs => :age))"
                ),
                [
                    {"tenant": t, "queue": queue, "priority": 1 + (i % 10 == 0), "age": float(queued - i)}
                    for i, t in enumerate(backlog)
                ],
            )
            session.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, type, params, queue, state, progress_total, attempt, "
                    "created_at, started_at, claimed_at, finished_at) "
                    "VALUES (gen_random_uuid(), :tenant, 'bench.job', '{}'::jsonb, :queue, 'succeeded', 1, 1, "
                    "now() - make_interval(secs => :start), now() - make_interval(secs => :start), "
                    "now() - make_interval(secs => :start), now() - make_interval(secs => :end))"
                ),
                [
                    {"tenant": t, "queue": queue, "start": start, "end": max(start - rng.uniform(10, 600), 0.0)}
                    for t in past
                    for start in (rng.uniform(0, WINDOW_S),)
                ],
            )
        session.execute(text("ANALYZE jobs"))


Claimer = Callable[[Session, str], "queries.Claim | None"]


def measure(
    settings: Settings,
    checks: sessionmaker[Session],
    name: str,
    claim: Claimer,
    *,
    claimers: int,
    claims: int,
    deadline_s: float,
    queue: str,
) -> Side:
    """``claimers`` threads claim (and end at once) until ``claims`` claims are made."""
    engine = make_engine(settings, pool_size=claimers, call_deadline_s=CALL_DEADLINE_S)
    sessions = make_sessionmaker(engine)
    taken: list[uuid.UUID] = []
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[BaseException] = []
    stop_at = time.monotonic() + deadline_s

    def loop(worker: int) -> None:
        owner = f"bench-{worker}"
        try:
            while time.monotonic() < stop_at:
                with lock:
                    if len(taken) >= claims:
                        return
                began = time.perf_counter()
                with transaction(sessions) as session:
                    got = claim(session, owner)
                took = time.perf_counter() - began
                if got is None:
                    return
                with transaction(sessions) as session:
                    end_run(session, job_id=got.job_id, attempt=got.attempt)
                with lock:
                    taken.append(got.job_id)
                    latencies.append(took)
        except BaseException as exc:  # reported below: a claimer that dies must not pass silently
            failures.append(exc)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(claimers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(stop_at - time.monotonic(), 0) + CALL_DEADLINE_S)
    seconds = time.perf_counter() - started
    engine.dispose()
    if failures:
        raise BenchError(f"{name}: a claimer failed: {failures[0]!r}")
    if any(t.is_alive() for t in threads):
        raise BenchError(f"{name}: a claimer hung past the deadline")
    with transaction(checks) as session:
        above_one = int(
            session.scalar(text("SELECT count(*) FROM jobs WHERE queue = :q AND attempt > 1"), {"q": queue}) or 0
        )
    repeated = sum(n - 1 for n in Counter(taken).values() if n > 1)
    return Side(name, len(taken), seconds, latencies, doubles=repeated + above_one)


def _report(side: Side) -> str:
    return (
        f"{side.name}: {side.claims} claims in {side.seconds:.1f} s = {side.rate:.0f} claims/s; latency p50 "
        f"{median(side.latencies_s) * MS:.1f} ms, p99 {percentile(side.latencies_s, 0.99) * MS:.1f} ms; "
        f"double claims {side.doubles}"
    )


def run(args: argparse.Namespace, stack: contextlib.ExitStack[None]) -> int:
    """Create the database, seed, measure both sides, report; returns the exit status."""
    db_name, db_url = services.create_database()
    stack.callback(services.drop_database, db_name)
    settings = Settings(environment="test", database_url=db_url, redis_url="redis://127.0.0.1:6379/0")
    upgrade(settings)
    engine = make_engine(settings, pool_size=2)
    stack.callback(engine.dispose)
    sessions = make_sessionmaker(engine)
    rng = random.Random(args.seed)
    began = time.perf_counter()
    seed(sessions, tenants=args.tenants, queued=args.queued, history=args.history, rng=rng)
    print(
        f"seeded in {time.perf_counter() - began:.1f} s: {args.tenants} tenants (Zipf s={ZIPF_S}), per queue "
        f"{args.queued} queued jobs and {args.history} finished attempts in the last {WINDOW_S:.0f} s",
        flush=True,
    )
    with transaction(sessions) as session:
        fifo = list(
            session.scalars(
                text("SELECT id FROM jobs WHERE queue = :q AND state = 'queued' ORDER BY created_at, id"),
                {"q": REFERENCE_QUEUE},
            )
        )
        token = session.scalar(text("SELECT id FROM jobs WHERE queue = :q LIMIT 1"), {"q": FAIR_QUEUE})
    order = iter(fifo)
    order_lock = threading.Lock()

    def reference(session: Session, owner: str) -> queries.Claim | None:
        with order_lock:
            job_id = next(order, None)
        return None if job_id is None else queries.claim_job(session, job_id=job_id, owner=owner, lease_s=LEASE_S)

    def fair(session: Session, owner: str) -> queries.Claim | None:
        return queries.claim_next(session, job_id=token, owner=owner, lease_s=LEASE_S, window_s=WINDOW_S)

    common = {"claimers": args.claimers, "claims": args.claims, "deadline_s": args.timeout_s}
    ref = measure(settings, sessions, "reference (claim by id)", reference, queue=REFERENCE_QUEUE, **common)
    print(_report(ref), flush=True)
    got = measure(settings, sessions, "fair share (claim_next)", fair, queue=FAIR_QUEUE, **common)
    print(_report(got), flush=True)
    if min(ref.claims, got.claims) < args.claims:
        raise BenchError(f"fewer claims than asked: reference {ref.claims}, fair {got.claims} of {args.claims}")
    for length in JOB_LENGTHS_S:
        print(
            f"{got.rate:.0f} claims/s supports about {got.rate * length:,.0f} workers running {length:.0f} s jobs "
            f"(each claims once a job)",
            flush=True,
        )
    print(
        f"RESULT claimers {args.claimers}: fair {got.rate:.0f} claims/s (p99 "
        f"{percentile(got.latencies_s, 0.99) * MS:.1f} ms) vs reference {ref.rate:.0f} claims/s (p99 "
        f"{percentile(ref.latencies_s, 0.99) * MS:.1f} ms): ratio {got.rate / ref.rate:.2f}; double claims "
        f"{got.doubles + ref.doubles}",
        flush=True,
    )
    return 1 if got.doubles or ref.doubles else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claimers", type=int, default=CLAIMERS)
    parser.add_argument("--tenants", type=int, default=TENANTS)
    parser.add_argument("--queued", type=int, default=QUEUED)
    parser.add_argument("--history", type=int, default=HISTORY)
    parser.add_argument("--claims", type=int, default=CLAIMS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per side")
    args = parser.parse_args(argv)
    return guarded_main(lambda stack: run(args, stack))


if __name__ == "__main__":
    sys.exit(main())
