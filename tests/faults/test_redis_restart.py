"""Redis flushed and restarted with 50 jobs queued and 1 running: Postgres is the source
of truth, so the reconciler re-sends what Redis lost, and the claim keeps each job to one run."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from tests.conftest import Caller
from tests.e2e.conftest import wait_job
from tests.support import services
from tests.support.redis_server import (  # noqa: F401 - this module's own Redis
    RedisServer,
    endpoints_fixture,
    redis_server_fixture,
)

pytestmark = pytest.mark.e2e

QUEUED_JOBS = 50
TINY = {"dataset": "digits", "image_size": 16, "batch_size": 8, "ngf": 8, "ndf": 8, "steps": 3, "seed": 1}


def test_redis_flush_and_restart_loses_nothing_and_runs_nothing_twice(
    client: TestClient,
    alice: Caller,
    worker: services.Proc,
    redis_server: RedisServer,
    sessions: sessionmaker[Session],
) -> None:
    # Given one job running and 50 queued behind it
    running = client.post(
        "/v1/jobs", json={"type": "gan.train", "params": {**TINY, "steps": 150}}, headers=alice.headers
    ).json()["id"]
    wait_job(client, alice, running, until=lambda j: j["state"] == "running", timeout=120)
    queued = [
        client.post("/v1/jobs", json={"type": "gan.train", "params": TINY}, headers=alice.headers).json()["id"]
        for _ in range(QUEUED_JOBS)
    ]
    # When Redis is flushed and restarted (every queued message is gone)
    redis_server.flush_and_stop()
    time.sleep(2)
    redis_server.start()
    # Then all 51 complete, each on its first and only attempt
    for job_id in [running, *queued]:
        done = wait_job(client, alice, job_id, timeout=400)
        assert done["state"] == "succeeded", (job_id, done["error"])
        assert done["attempt"] == 1, job_id
    with sessions() as session:
        counts = dict(
            session.execute(
                text(
                    "SELECT job_id::text, count(*) FROM metrics WHERE name = 'd_loss' AND job_id::text = ANY(:ids) "
                    "GROUP BY job_id"
                ),
                {"ids": queued},
            ).all()
        )
    assert counts == {job_id: TINY["steps"] for job_id in queued}
