"""Fault injection on real worker processes: SIGTERM, a frozen (zombie) worker, and a job
whose worker process crashes every time. Each asserts nothing is lost or duplicated."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from tests.conftest import Caller
from tests.e2e.conftest import wait_job
from tests.support import services

pytestmark = pytest.mark.e2e

SMALL_GAN = {"dataset": "digits", "image_size": 32, "batch_size": 32, "ngf": 32, "ndf": 32, "seed": 5}
SIGTERM_GRACE_S = 30.0


def rows(sessions: sessionmaker[Session], sql: str, job_id: str) -> list[tuple]:  # type: ignore[type-arg]
    """Rows of a query about one job."""
    with sessions() as session:
        return [tuple(r) for r in session.execute(text(sql), {"j": job_id}).all()]


def d_loss_attempts(sessions: sessionmaker[Session], job_id: str) -> list[tuple[int, int]]:
    """(step, attempt) of every stored d_loss row."""
    return rows(
        sessions, "SELECT step, attempt FROM metrics WHERE job_id = :j AND name = 'd_loss' ORDER BY step", job_id
    )  # type: ignore[return-value]


def submit(client: TestClient, caller: Caller, **params: object) -> str:
    """Submit a small gan.train job; returns its id."""
    body = {"type": "gan.train", "params": {**SMALL_GAN, **params}}
    response = client.post("/v1/jobs", json=body, headers=caller.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_sigterm_checkpoints_hands_back_and_exits(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    log_dir: Path,
    worker: services.Proc,
    sessions: sessionmaker[Session],
) -> None:
    steps = 400
    job_id = submit(client, alice, steps=steps, checkpoint_every=1000)
    wait_job(client, alice, job_id, until=lambda j: j["progress"]["step"] >= 10, timeout=120)
    # When the worker gets SIGTERM, as from a deploy or a scale-down (tini -g: the whole group)
    sent = time.monotonic()
    worker.signal_group(signal.SIGTERM)
    assert worker.proc is not None
    worker.proc.wait(SIGTERM_GRACE_S)
    exited_after = time.monotonic() - sent
    # Then it exited within the grace period, and the job is back in the queue at once
    # (no lease expiry needed), with a checkpoint at the step where it stopped
    job = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert exited_after < SIGTERM_GRACE_S
    assert job["state"] in ("queued", "running")  # running only if the standby already took it
    assert job["checkpoint"] is not None and 10 <= job["checkpoint"]["step"] < steps
    stopped_at = job["checkpoint"]["step"]
    assert f"job {job_id}" in worker.log() and "released" in worker.log()
    # And a fresh worker resumes it from that checkpoint
    worker.start().wait_for_log("ready.", start=len(worker.log()))
    done = wait_job(client, alice, job_id, timeout=240)
    assert done["state"] == "succeeded" and done["attempt"] == 2
    assert done["handbacks"] == 1  # the handed-back attempt is not counted against max_attempts
    assert done["resumed_from_step"] == stopped_at
    attempts = d_loss_attempts(sessions, job_id)
    assert [s for s, _a in attempts] == list(range(1, steps + 1))
    assert [s for s, a in attempts if a == 2] == list(range(stopped_at + 1, steps + 1))


def test_frozen_worker_is_fenced_out(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    log_dir: Path,
    worker: services.Proc,
    sessions: sessionmaker[Session],
) -> None:
    steps = 300
    job_id = submit(client, alice, steps=steps, checkpoint_every=20)
    wait_job(client, alice, job_id, until=lambda j: (j["checkpoint"] or {}).get("step", 0) >= 20, timeout=120)
    # Given the worker is frozen (SIGSTOP) past its lease while a second worker stands by
    worker.signal_group(signal.SIGSTOP)
    frozen_at = time.monotonic()
    standby = services.celery_worker(settings, log_dir, f"standby-{uuid.uuid4().hex[:6]}").start()
    try:
        standby.wait_for_log("ready.")
        # When the standby takes the job over (attempt 2)...
        taken = wait_job(
            client, alice, job_id, until=lambda j: j["attempt"] == 2 and j["state"] == "running", timeout=60
        )
        assert time.monotonic() - frozen_at > settings.lease_s
        resumed_from = taken["resumed_from_step"]
        # ...and the zombie wakes up while attempt 2 is running
        wait_job(client, alice, job_id, until=lambda j: j["progress"]["step"] > (resumed_from or 0) + 5, timeout=60)
        worker.signal_group(signal.SIGCONT)
        worker.wait_for_log("lease lost", timeout=60)
        done = wait_job(client, alice, job_id, timeout=240)
    finally:
        worker.signal_group(signal.SIGCONT)
        standby.stop()
    # Then every write of the stale attempt was rejected: state, metrics, checkpoint and
    # artifacts after the takeover are all attempt 2's
    assert done["state"] == "succeeded" and done["attempt"] == 2
    attempts = d_loss_attempts(sessions, job_id)
    assert [s for s, _a in attempts] == list(range(1, steps + 1))
    assert all(a == 2 for s, a in attempts if s > resumed_from)
    (key,) = rows(sessions, "SELECT checkpoint_key FROM jobs WHERE id = :j", job_id)[0]
    assert "/a2-step-" in key
    late = rows(sessions, "SELECT name, attempt FROM artifacts WHERE job_id = :j AND attempt <> 2", job_id)
    assert all(name.startswith("samples/step-") for name, _a in late)  # only grids from before the takeover
    assert "generator.pt" not in {name for name, _a in late}


def _pool_children(proc: services.Proc) -> list[psutil.Process]:
    assert proc.proc is not None
    return psutil.Process(proc.proc.pid).children(recursive=True)


def test_job_that_crashes_its_worker_every_time_fails_after_max_attempts(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    worker: services.Proc,
) -> None:
    # Given a job whose worker process dies (a native crash, simulated with SIGKILL of
    # the pool child) every time it runs, and a healthy job queued behind it
    poison = submit(client, alice, steps=5000, checkpoint_every=1000)
    healthy = submit(client, alice, steps=20)
    kills = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{poison}", headers=alice.headers).json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            break
        if job["state"] == "running" and job["attempt"] > kills:
            for child in _pool_children(worker):
                child.kill()
            kills += 1
        time.sleep(0.2)
    # Then it is failed after max_attempts with the reason, and did not loop forever
    assert kills == settings.max_attempts
    assert job["state"] == "failed"
    assert job["error"]["code"] == "attempts_exhausted"
    assert f"max_attempts ({settings.max_attempts})" in job["error"]["message"]
    # and it did not block the queue: the job behind it ran
    assert wait_job(client, alice, healthy, timeout=120)["state"] == "succeeded"
