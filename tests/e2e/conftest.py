"""Worker and beat processes for end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from shared.config import Settings
from tests.conftest import Caller
from tests.support import services

TERMINAL = {"succeeded", "failed", "cancelled", "stopped_early"}


@pytest.fixture(scope="module")
def beat(settings: Settings, log_dir: Path) -> Iterator[services.Proc]:
    """Celery beat, scheduling the reconciler every second."""
    proc = services.celery_beat(settings, log_dir).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def cpu_worker(settings: Settings, log_dir: Path, beat: services.Proc) -> Iterator[services.Proc]:
    """The housekeeping worker: runs the reconciler, never blocked behind training."""
    proc = services.celery_worker(settings, log_dir, "cpu1", queues="cpu").start()
    proc.wait_for_log("ready.")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def worker(settings: Settings, log_dir: Path, cpu_worker: services.Proc) -> Iterator[services.Proc]:
    """One warm training worker (prefork, one child) on the gpu queue."""
    proc = services.celery_worker(settings, log_dir, "w1", queues="gpu").start()
    proc.wait_for_log("ready.")
    yield proc
    proc.stop()


def wait_job(
    client: TestClient,
    caller: Caller,
    job_id: str,
    until: Callable[[dict[str, Any]], bool] = lambda j: j["state"] in TERMINAL,
    timeout: float = 240.0,
) -> dict[str, Any]:
    """Poll the API until ``until(job)`` holds."""
    deadline = time.monotonic() + timeout
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=caller.headers).json()
        if until(job):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not get there in {timeout}s; last seen: {job}")
