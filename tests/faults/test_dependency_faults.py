"""Dependencies that disappear mid-training: Postgres (every connection reset, new ones
refused) and the S3 server, each behind a TCP proxy the test cuts and restores. The real
servers stay behind the proxies; nothing is mocked."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from tests.conftest import Caller, Endpoints
from tests.e2e.conftest import wait_job
from tests.support import services
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.e2e

SMALL_GAN = {"dataset": "digits", "image_size": 16, "batch_size": 16, "ngf": 16, "ndf": 16, "seed": 9}
PG_OUTAGE_S = 8.0
S3_OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def pg_proxy() -> Iterator[TcpProxy]:
    """A cuttable path to the test Postgres."""
    proxy = TcpProxy(target=services.pg_address(), port=services.free_port()).start()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def s3_proxy(s3_server: services.S3Server) -> Iterator[TcpProxy]:
    """A cuttable path to the S3 server."""
    proxy = TcpProxy(target=("127.0.0.1", s3_server.port), port=services.free_port()).start()
    yield proxy
    proxy.cut()


@pytest.fixture(scope="module")
def endpoints(pg_proxy: TcpProxy, s3_proxy: TcpProxy) -> Endpoints:
    """The app, workers and beat reach Postgres and S3 only through the proxies."""
    return Endpoints(pg_host="127.0.0.1", pg_port=pg_proxy.port, s3=f"127.0.0.1:{s3_proxy.port}")


def d_loss_steps(sessions: sessionmaker[Session], job_id: str) -> list[int]:
    """Every stored d_loss step of a job."""
    with sessions() as session:
        return list(
            session.execute(
                text("SELECT step FROM metrics WHERE job_id = :j AND name = 'd_loss' ORDER BY step"), {"j": job_id}
            ).scalars()
        )


def submit(client: TestClient, caller: Caller, **params: object) -> str:
    """Submit a small gan.train job."""
    response = client.post(
        "/v1/jobs", json={"type": "gan.train", "params": {**SMALL_GAN, **params}}, headers=caller.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_postgres_outage_mid_training(
    client: TestClient,
    alice: Caller,
    worker: services.Proc,
    pg_proxy: TcpProxy,
    sessions: sessionmaker[Session],
) -> None:
    steps = 300
    job_id = submit(client, alice, steps=steps, checkpoint_every=25)
    wait_job(client, alice, job_id, until=lambda j: j["progress"]["step"] >= 30, timeout=120)
    # When Postgres goes away (connections reset, new ones refused) for a while
    pg_proxy.cut()
    try:
        time.sleep(1.0)
        # Then the API answers 503 with Retry-After, never 500
        polled = client.get(f"/v1/jobs/{job_id}?x={uuid.uuid4()}", headers=alice.headers)
        listed = client.get("/v1/jobs", headers=alice.headers)
        posted = client.post("/v1/jobs", json={"type": "gan.train", "params": SMALL_GAN}, headers=alice.headers)
        ready = client.get("/readyz")
        time.sleep(PG_OUTAGE_S)
    finally:
        pg_proxy.restore()
    for response in (polled, listed, posted, ready):
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.headers["retry-after"].isdigit()
    # And the job completes with its full history, each step once
    done = wait_job(client, alice, job_id, timeout=300)
    assert done["state"] == "succeeded", done["error"]
    assert d_loss_steps(sessions, job_id) == list(range(1, steps + 1))
    assert "database unavailable" in worker.log() or "heartbeat failed" in worker.log()


def test_s3_outage_of_30s_is_ridden_out(
    client: TestClient,
    alice: Caller,
    worker: services.Proc,
    s3_proxy: TcpProxy,
    sessions: sessionmaker[Session],
) -> None:
    steps = 400
    job_id = submit(client, alice, steps=steps, checkpoint_every=10, sample_every=50)
    wait_job(client, alice, job_id, until=lambda j: (j["checkpoint"] or {}).get("step", 0) >= 10, timeout=120)
    log_mark = len(worker.log())
    s3_proxy.cut()
    try:
        time.sleep(S3_OUTAGE_S)
        stalled = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    finally:
        s3_proxy.restore()
    # uploads were retried with backoff while the server was gone, and the job held on
    assert stalled["state"] == "running"
    assert "retrying in" in worker.log()[log_mark:]
    done = wait_job(client, alice, job_id, timeout=300)
    assert done["state"] == "succeeded", done["error"]
    assert d_loss_steps(sessions, job_id) == list(range(1, steps + 1))
    grid = client.get(f"/v1/jobs/{job_id}/artifacts/samples/final.png", headers=alice.headers)
    assert grid.status_code == 200 and grid.content.startswith(b"\x89PNG")


def test_s3_down_past_the_deadline_fails_the_job_clearly(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    log_dir: Path,
    worker: services.Proc,
    s3_proxy: TcpProxy,
) -> None:
    # Given a worker whose storage retry deadline is 5 s (the module's worker steps aside)
    worker.stop()
    impatient = services.celery_worker(
        settings.model_copy(update={"storage_retry_deadline_s": 5.0}), log_dir, f"impatient-{uuid.uuid4().hex[:6]}"
    ).start()
    try:
        impatient.wait_for_log("ready.")
        job_id = submit(client, alice, steps=5000, checkpoint_every=20)
        wait_job(client, alice, job_id, until=lambda j: j["progress"]["step"] >= 5, timeout=120)
        # When storage stays down past that deadline
        s3_proxy.cut()
        try:
            done = wait_job(client, alice, job_id, timeout=120)
        finally:
            s3_proxy.restore()
    finally:
        impatient.stop()
        worker.start().wait_for_log("ready.", start=len(worker.log()))
    # Then the job fails with a clear error instead of hanging
    assert done["state"] == "failed"
    assert done["error"]["code"] == "storage_unavailable"
    assert "giving up" in done["error"]["message"]
