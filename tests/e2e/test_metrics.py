"""Prometheus metrics end to end: the API's /metrics around real submits, and a real prefork worker
with two pool processes whose multiprocess metrics its parent serves on a port."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from tests.conftest import Caller
from tests.e2e.conftest import wait_job
from tests.support import services
from workers.metrics import DEFAULT_DIR_PREFIX

pytestmark = pytest.mark.e2e

# A few seconds of CPU training each, with two checkpoints: long enough that two jobs overlap.
GAN = {"dataset": "digits", "image_size": 16, "batch_size": 8, "ngf": 8, "ndf": 8, "steps": 200, "seed": 3,
       "sample_every": 100, "checkpoint_every": 100}  # fmt: skip
POOL_PROCESSES = 2
SCRAPE_DEADLINE_S = 60.0
JOB_DEADLINE_S = 240.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by (name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series is absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


def scrape_until(scrape: Callable[[], Samples], ready: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``ready`` holds, within SCRAPE_DEADLINE_S."""
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    samples = scrape()
    while not ready(samples):
        if time.monotonic() > deadline:
            raise TimeoutError(f"metrics not there within {SCRAPE_DEADLINE_S}s: {sorted(samples)[:50]}")
        time.sleep(0.2)
        samples = scrape()
    return samples


@pytest.fixture(scope="module")
def metrics_worker(settings: Settings, log_dir: Path) -> Iterator[tuple[services.Proc, int]]:
    """A gpu-queue worker with two pool processes, serving its metrics on a free port."""
    port = services.free_port()
    proc = services.celery_worker(settings, log_dir, "metrics1", queues="gpu", concurrency=POOL_PROCESSES)
    proc.env["ATELIER_WORKER_METRICS_PORT"] = str(port)
    proc.start()
    proc.wait_for_log("ready.")
    services.wait_for_port(port)
    yield proc, port
    proc.stop()


def test_api_and_worker_metrics(client: TestClient, alice: Caller, metrics_worker: tuple[services.Proc, int]) -> None:
    proc, port = metrics_worker

    def scrape_api() -> Samples:
        response = client.get("/metrics")
        assert response.status_code == 200
        return parse(response.text)

    def scrape_worker() -> Samples:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0)
        assert response.status_code == 200
        return parse(response.text)

    submit_route = {"route": "/v1/jobs", "method": "POST", "status": "201"}
    before = scrape_api()
    assert "/v1/jobs" not in str(scrape_worker())  # the worker serves its own metrics only

    # When two small gan.train jobs are submitted at once and run, one in each pool process
    jobs = [
        client.post("/v1/jobs", json={"type": "gan.train", "params": {**GAN, "seed": seed}}, headers=alice.headers)
        for seed in (3, 4)
    ]
    assert [j.status_code for j in jobs] == [201, 201]
    queued = scrape_api()
    done = [wait_job(client, alice, j.json()["id"], timeout=JOB_DEADLINE_S) for j in jobs]
    assert [d["state"] for d in done] == ["succeeded", "succeeded"], [d["error"] for d in done]

    # Then the API counted the submits by route template and by type, and reads the queues from Postgres
    assert value(queued, "atelier_http_requests_total", **submit_route) == value(
        before, "atelier_http_requests_total", **submit_route
    ) + len(jobs)
    assert value(queued, "atelier_jobs_submitted_total", type="gan.train") == value(
        before, "atelier_jobs_submitted_total", type="gan.train"
    ) + len(jobs)
    assert ("atelier_queue_depth", frozenset({("queue", "gpu")})) in queued
    assert ("atelier_queue_oldest_age_seconds", frozenset({("queue", "gpu")})) in queued
    assert not any("/v1/jobs/" in str(labels) and "{job_id}" not in str(labels) for _n, labels in queued)
    after = scrape_api()
    assert value(after, "atelier_jobs", type="gan.train", state="succeeded") >= len(jobs)
    assert value(after, "atelier_queue_depth", queue="gpu") == 0

    # And the worker's parent adds up both pool processes' counters and histograms
    def both_recorded(samples: Samples) -> bool:
        count = value(samples, "atelier_worker_job_duration_seconds_count", type="gan.train", outcome="succeeded")
        return count >= len(jobs)

    worker = scrape_until(scrape_worker, both_recorded)
    assert total(worker, "atelier_worker_attempts_started_total", type="gan.train") >= len(jobs)
    assert value(worker, "atelier_worker_job_duration_seconds_count", type="gan.train", outcome="succeeded") == 2
    assert total(worker, "atelier_worker_checkpoint_upload_seconds_count", type="gan.train") >= len(jobs)
    assert total(worker, "atelier_worker_handbacks_total") == 0
    # the jobs are over: no live pool process reports a rate; on CPU no device memory is in use
    assert total(worker, "atelier_worker_steps_per_second") == 0
    assert total(worker, "atelier_worker_device_memory_bytes") == 0
    # each pool process wrote its own files in the worker's default directory
    assert proc.proc is not None
    metrics_dir = Path(tempfile.gettempdir()) / f"{DEFAULT_DIR_PREFIX}{proc.proc.pid}"
    writers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("counter_*.db")}
    assert len(writers) == POOL_PROCESSES, sorted(metrics_dir.iterdir())


def test_the_worker_removes_its_metrics_directory_when_it_stops(
    metrics_worker: tuple[services.Proc, int],
) -> None:
    proc, _port = metrics_worker
    assert proc.proc is not None
    metrics_dir = Path(tempfile.gettempdir()) / f"{DEFAULT_DIR_PREFIX}{proc.proc.pid}"
    assert metrics_dir.is_dir()
    proc.stop()
    assert not metrics_dir.exists()
