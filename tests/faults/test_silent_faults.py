"""Faults that go silent instead of loud: Postgres, Redis and S3 each stop answering while every
socket stays open (a NAT or load-balancer drop, a failover, a cable pull), and S3 slows to a
trickle. A frozen connection never carries another byte, as after a real silent drop; only new
connections work once the fault is over.

The training worker reaches all three services through proxies (tests/support/proxy.py); the
API, the reconciler and the test itself reach them directly, so only the worker sees the fault.
Each test has its own deadline: a hang is a failure, not a stalled suite.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.counters import COUNTERS_KEY
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from tests.e2e.conftest import TERMINAL, wait_job
from tests.faults.test_dependency_faults import d_loss_steps, submit
from tests.support import services
from tests.support.proxy import TcpProxy
from workers.watchdog import EXIT_WATCHDOG

pytestmark = pytest.mark.e2e

FREEZE_S = 8.0  # over two test leases (3 s): the lease is lost while the worker cannot hear it
STALL_S = 30.0  # the proxied worker's watchdog_stall_s: longer than any freeze here
GRACE_S = 1.5
SLACK_S = 30.0  # a loaded 2-core host: time for a claim, a resume, a reconciler pass
TEST_DEADLINE_S = 300
# A 64 px DCGAN at width 52 with Adam: its checkpoint is about 52 MB.
BIG_GAN = {"image_size": 64, "ngf": 52, "ndf": 52, "batch_size": 8}
BIG_CHECKPOINT_BYTES = 50_000_000
TRICKLE_BYTES_PER_S = 6 * 1024 * 1024


def _via(url: str, port: int) -> str:
    """``url`` with its host:port replaced by the loopback proxy's."""
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest.fixture(scope="module")
def proxies(settings: Settings) -> Iterator[dict[str, TcpProxy]]:
    """One freezable path per service, to the real server behind it."""
    redis_port = urlsplit(settings.redis_url).port or 6379
    s3_host, s3_port = settings.s3_endpoint.rsplit(":", 1)
    built = {
        "postgres": TcpProxy(target=services.pg_address(), port=services.free_port()).start(),
        "redis": TcpProxy(target=("127.0.0.1", redis_port), port=services.free_port()).start(),
        "s3": TcpProxy(target=(s3_host, int(s3_port)), port=services.free_port()).start(),
    }
    yield built
    for proxy in built.values():
        proxy.cut()


@pytest.fixture
def healthy(proxies: dict[str, TcpProxy]) -> Iterator[dict[str, TcpProxy]]:
    """The proxies, forwarding at full speed again after each test whatever it did."""
    yield proxies
    for proxy in proxies.values():
        proxy.thaw()
        proxy.unslow()


def _worker_settings(settings: Settings, proxies: dict[str, TcpProxy], **overrides: object) -> Settings:
    return settings.model_copy(
        update={
            "database_url": _via(settings.database_url, proxies["postgres"].port),
            "redis_url": _via(settings.redis_url, proxies["redis"].port),
            "s3_endpoint": f"127.0.0.1:{proxies['s3'].port}",
            "watchdog_stall_s": STALL_S,
            "watchdog_grace_s": GRACE_S,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def proxied_worker(
    settings: Settings, log_dir: Path, proxies: dict[str, TcpProxy], cpu_worker: services.Proc
) -> Iterator[services.Proc]:
    """The one training worker: every connection it makes goes through a proxy."""
    proc = services.celery_worker(_worker_settings(settings, proxies), log_dir, "silent1").start()
    proc.wait_for_log("ready.")
    yield proc
    proc.stop()


def _attempts(sessions: sessionmaker[Session], job_id: str) -> int:
    with sessions() as session:
        return int(session.execute(text("SELECT attempt FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one())


def _checkpointing_job(client: TestClient, caller: Caller, worker: services.Proc, *, steps: int) -> tuple[str, int]:
    """A job checkpointing every 5 steps, past its second checkpoint; returns its id and the worker log's length then."""
    job_id = submit(client, caller, steps=steps, checkpoint_every=5)
    wait_job(client, caller, job_id, until=lambda j: (j["checkpoint"] or {}).get("step", 0) >= 10, timeout=120)
    return job_id, len(worker.log())


def _runs_next_job(client: TestClient, caller: Caller) -> None:
    """The worker (or the process that replaced it) takes new work."""
    follow_up = submit(client, caller, steps=20)
    assert wait_job(client, caller, follow_up, timeout=SLACK_S * 4)["state"] == "succeeded"


@pytest.mark.timeout(TEST_DEADLINE_S)
def test_postgres_freeze_mid_training_is_given_up_and_resumed_once(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    proxied_worker: services.Proc,
    healthy: dict[str, TcpProxy],
    sessions: sessionmaker[Session],
) -> None:
    # Given a job checkpointing every 5 steps, its heartbeat writing every 0.5 s
    steps = 300
    job_id, mark = _checkpointing_job(client, alice, proxied_worker, steps=steps)
    # When Postgres goes silent mid-query and mid-heartbeat, for over two leases
    frozen_at = time.monotonic()
    assert healthy["postgres"].freeze() >= 1  # the worker's open connections went silent
    time.sleep(FREEZE_S)
    healthy["postgres"].thaw()
    # Then the worker cut its calls at their deadline instead of waiting for ever...
    log = proxied_worker.log()[mark:]
    assert "outlived its" in log
    # ...gave the attempt up once it learned the lease was gone, and a new attempt resumed it
    resumed = wait_job(client, alice, job_id, until=lambda j: j["attempt"] >= 2 or j["state"] in TERMINAL, timeout=120)
    assert resumed["attempt"] >= 2, resumed
    assert time.monotonic() - frozen_at <= FREEZE_S + settings.lease_s + GRACE_S + SLACK_S * 2
    done = wait_job(client, alice, job_id, timeout=240)
    assert done["state"] == "succeeded", done["error"]
    # And every step's metrics are there exactly once
    assert d_loss_steps(sessions, job_id) == list(range(1, steps + 1))
    _runs_next_job(client, alice)


@pytest.mark.timeout(TEST_DEADLINE_S)
def test_s3_freeze_mid_checkpoint_upload_is_ridden_out(
    client: TestClient,
    alice: Caller,
    proxied_worker: services.Proc,
    healthy: dict[str, TcpProxy],
    sessions: sessionmaker[Session],
) -> None:
    # Given a job that uploads a checkpoint every 5 steps over a pooled S3 connection
    steps = 200
    job_id, mark = _checkpointing_job(client, alice, proxied_worker, steps=steps)
    # When S3 goes silent, the open connection included, then comes back for new connections
    healthy["s3"].freeze()
    time.sleep(FREEZE_S)
    healthy["s3"].thaw()
    # Then each upload timed out and was retried on a new connection, and the job held its lease
    done = wait_job(client, alice, job_id, timeout=240)
    assert done["state"] == "succeeded", done["error"]
    assert "retrying in" in proxied_worker.log()[mark:]
    assert _attempts(sessions, job_id) == 1
    assert d_loss_steps(sessions, job_id) == list(range(1, steps + 1))
    grid = client.get(f"/v1/jobs/{job_id}/artifacts/samples/final.png", headers=alice.headers)
    assert grid.status_code == 200 and grid.content.startswith(b"\x89PNG")


@pytest.mark.timeout(TEST_DEADLINE_S)
def test_a_50mb_checkpoint_over_a_trickle_completes_without_losing_the_lease(
    client: TestClient,
    alice: Caller,
    proxied_worker: services.Proc,
    healthy: dict[str, TcpProxy],
    sessions: sessionmaker[Session],
    store: S3ObjectStore,
) -> None:
    # Given S3 slowed to a trickle, and a job whose checkpoint is over 50 MB
    healthy["s3"].slow(latency_s=0.01, bytes_per_s=TRICKLE_BYTES_PER_S)
    started = time.monotonic()
    job_id = submit(client, alice, steps=6, checkpoint_every=6, sample_every=1000, **BIG_GAN)
    done = wait_job(client, alice, job_id, timeout=240)
    elapsed = time.monotonic() - started
    # Then the upload took as long as the trickle makes it, and the job still ran once, to the end
    assert done["state"] == "succeeded", done["error"]
    assert _attempts(sessions, job_id) == 1
    assert done["checkpoint"]["step"] == 6
    with sessions() as session:
        key = session.execute(text("SELECT checkpoint_key FROM jobs WHERE id = :j"), {"j": job_id}).scalar_one()
    size = store.client.stat_object(store.bucket, key).size
    assert size is not None and size >= BIG_CHECKPOINT_BYTES
    assert elapsed >= size / TRICKLE_BYTES_PER_S
    assert d_loss_steps(sessions, job_id) == list(range(1, 7))


@pytest.mark.timeout(TEST_DEADLINE_S)
def test_redis_freeze_leaves_the_worker_consuming_once_it_is_back(
    client: TestClient,
    alice: Caller,
    proxied_worker: services.Proc,
    healthy: dict[str, TcpProxy],
    sessions: sessionmaker[Session],
) -> None:
    # Given a job training while the worker's broker connection goes silent
    running = submit(client, alice, steps=150)
    wait_job(client, alice, running, until=lambda j: j["progress"]["step"] >= 5, timeout=120)
    assert healthy["redis"].freeze() >= 1
    # When another job is sent (the API reaches Redis directly) while the worker cannot hear it
    queued = submit(client, alice, steps=20)
    time.sleep(FREEZE_S)
    healthy["redis"].thaw()
    # Then the running job was never disturbed, and the worker reconnects and takes the next one
    first = wait_job(client, alice, running, timeout=180)
    assert first["state"] == "succeeded" and _attempts(sessions, running) == 1
    second = wait_job(client, alice, queued, timeout=SLACK_S * 4)
    assert second["state"] == "succeeded", second
    assert d_loss_steps(sessions, queued) == list(range(1, 21))


@pytest.mark.timeout(TEST_DEADLINE_S)
def test_a_main_thread_that_cannot_stop_ends_its_process_and_the_job_completes(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    log_dir: Path,
    proxies: dict[str, TcpProxy],
    healthy: dict[str, TcpProxy],
    proxied_worker: services.Proc,
    sessions: sessionmaker[Session],
) -> None:
    # Given a worker whose watchdog gives a step-free stretch 4 s (the module's worker steps aside)
    proxied_worker.stop()
    impatient = services.celery_worker(
        _worker_settings(settings, proxies, watchdog_stall_s=4.0), log_dir, f"impatient-{uuid.uuid4().hex[:6]}"
    ).start()
    counters = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    exits_before = int(counters.hget(COUNTERS_KEY, "watchdog_exit") or 0)
    steps = 200
    try:
        impatient.wait_for_log("ready.")
        job_id, _mark = _checkpointing_job(client, alice, impatient, steps=steps)
        # When S3 goes silent for longer, so the main thread sits in upload retries, never at a stop check
        healthy["s3"].freeze()
        impatient.wait_for_log(f"exited with 'exitcode {EXIT_WATCHDOG}'", timeout=FREEZE_S + SLACK_S)
        healthy["s3"].thaw()
        # Then the process exited, was replaced, and the replacement finished the job from its checkpoint
        done = wait_job(client, alice, job_id, timeout=240)
        assert done["state"] == "succeeded", done["error"]
        assert _attempts(sessions, job_id) >= 2
        assert d_loss_steps(sessions, job_id) == list(range(1, steps + 1))
        log = impatient.log()
        assert "main thread reached no stop check" in log and "exiting so the pool replaces" in log
        assert int(counters.hget(COUNTERS_KEY, "watchdog_exit") or 0) == exits_before + 1
        printed = subprocess.run(
            [sys.executable, "-m", "shared.cli", "counters"],
            env=services.settings_env(settings), capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert f"watchdog_exit {exits_before + 1}" in printed.splitlines()
        _runs_next_job(client, alice)
    finally:
        counters.close()
        impatient.stop()
        proxied_worker.start().wait_for_log("ready.", start=len(proxied_worker.log()))
