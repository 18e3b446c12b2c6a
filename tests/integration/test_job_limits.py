"""Admission and per-job limits on the real API, Postgres and S3 server, with the worker runtime in
this process: a job just under the declared worker memory is admitted and runs, one just over
is a 422; the artifact caps hold at submit and, when the API is bypassed, in the worker; a job
past its max_runtime_s fails; a worker with less memory free than a job needs fails it before
training. The limits here are tiny (settings_overrides), so tiny jobs sit just under them.

Each test reads Given / When / Then."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.models import Job
from shared.db.session import transaction
from shared.jobs.gan_train import GanTrainParams
from shared.jobs.memory import describe_bytes, gan_memory_bytes
from tests.conftest import Caller

pytest.importorskip("torch")

from workers.engines import execute
from workers.runtime import WorkerContext, run_job

pytestmark = pytest.mark.integration

TINY: dict[str, Any] = {
    "dataset": "digits",
    "image_size": 16,
    "steps": 6,
    "batch_size": 16,
    "ngf": 8,
    "ndf": 8,
    "nz": 8,
    "sample_every": 3,
    "checkpoint_every": 3,
    "image_metrics": False,
}
TINY_NEED = gan_memory_bytes(GanTrainParams(**TINY))
MAX_ARTIFACTS = 12


@pytest.fixture(scope="module")
def settings_overrides() -> dict[str, object]:
    """Workers with exactly the tiny job's estimated memory, and at most 12 artifacts a job."""
    return {"worker_device_memory_bytes": TINY_NEED, "max_job_artifacts": MAX_ARTIFACTS}


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield WorkerContext.build(settings.model_copy(update={"worker_name": "limits-test"}))


def submit(client: TestClient, caller: Caller, job_type: str, params: dict[str, Any]) -> Any:
    return client.post("/v1/jobs", json={"type": job_type, "params": params}, headers=caller.headers)


def run(ctx: WorkerContext, sessions: sessionmaker[Session], caller: Caller, job_id: str) -> Job:
    """Run the job through the worker runtime; the job row afterwards."""
    run_job(ctx, uuid.UUID(job_id), execute, exact=True)
    with transaction(sessions) as session:
        return queries.get_job(session, tenant_id=caller.tenant_id, job_id=uuid.UUID(job_id))


def test_a_job_just_under_the_worker_memory_runs_and_one_just_over_gets_422(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    # Given workers that declare exactly the tiny job's estimate
    # When the tiny job and one with a slightly larger batch are submitted
    fits = submit(client, alice, "gan.train", TINY)
    over = submit(client, alice, "gan.train", TINY | {"batch_size": TINY["batch_size"] + 8})
    # Then the first is admitted and a real worker runs it to success
    assert fits.status_code == 201, fits.text
    assert run(worker, sessions, alice, fits.json()["id"]).state == "succeeded"
    # And the second is a 422 naming the batch size, its estimate and the workers' memory
    assert over.status_code == 422, over.text
    error = over.json()["error"]
    assert error["field"] == "params.batch_size", error
    assert "needs about" in error["message"] and "of device memory (estimate;" in error["message"]
    assert f"over the {describe_bytes(TINY_NEED)} this server's workers have" in error["message"], error


def test_a_sample_every_past_the_artifact_cap_gets_422(client: TestClient, alice: Caller) -> None:
    # When a job that would store a grid at each of 300 steps is submitted to a server allowing 12 artifacts
    response = submit(client, alice, "gan.train", TINY | {"steps": 300, "sample_every": 1, "checkpoint_every": 100})
    # Then it is a 422 naming sample_every, the count and the cap
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "params.sample_every", error
    assert f"would store 304 artifacts, over this server's limit of {MAX_ARTIFACTS} a job" in error["message"]
    # And one that stays under it is admitted
    assert submit(client, alice, "gan.train", TINY | {"steps": 24, "sample_every": 3}).status_code == 201


def test_the_workers_artifact_cap_holds_when_the_api_is_bypassed(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    # Given a job stored without admission (as if the cap had been lowered after it was submitted)
    # that would store a grid at each of 20 steps: 24 artifacts
    params = GanTrainParams(**(TINY | {"steps": 20, "sample_every": 1, "checkpoint_every": 10}))
    with transaction(sessions) as session:
        job, _created = queries.create_job(
            session,
            tenant_id=alice.tenant_id,
            job_type="gan.train",
            params=params.model_dump(mode="json"),
            queue="gpu",
            total=params.steps,
            max_attempts=1,
            idempotency_key=None,
        )
        job_id = str(job.id)
    # When the worker runs it
    done = run(worker, sessions, alice, job_id)
    # Then it fails with artifact_limit at the 13th, having stored 12
    assert (done.state, done.error_code) == ("failed", "artifact_limit"), done.error_message
    assert "would make 13 artifacts" in (done.error_message or "")
    listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=alice.headers).json()["items"]
    assert len(listed) == MAX_ARTIFACTS


def test_a_job_past_its_max_runtime_fails_with_runtime_exceeded(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    # Given a job of 200,000 steps (minutes here) that may run for 1 s
    params = TINY | {"steps": 200_000, "sample_every": 200_000, "checkpoint_every": 200_000, "max_runtime_s": 1}
    created = submit(client, alice, "gan.train", params)
    assert created.status_code == 201, created.text
    assert created.json()["params"]["max_runtime_s"] == 1
    # When a worker runs it
    done = run(worker, sessions, alice, created.json()["id"])
    # Then it failed on its own clock, saying why and what to change
    assert (done.state, done.error_code) == ("failed", "runtime_exceeded"), done.error_message
    assert "ran for longer than its max_runtime_s of 1 s" in (done.error_message or "")
    assert 0 < (done.progress_step or 0) < 200_000


def test_a_worker_with_too_little_memory_free_fails_gan_jobs_before_they_start(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, worker: WorkerContext
) -> None:
    # Given a trained tiny generator, and a worker that may use at most 64 MiB
    trained = submit(client, alice, "gan.train", TINY)
    assert run(worker, sessions, alice, trained.json()["id"]).state == "succeeded"
    small = WorkerContext.build(
        settings.model_copy(update={"worker_name": "small-device", "device_memory_limit_bytes": 64 * 1024**2})
    )
    # When that worker runs a gan.train job and a gan.sample job, both admitted by the API
    train = submit(client, alice, "gan.train", TINY)
    sample = submit(client, alice, "gan.sample", {"source_job": trained.json()["id"], "n": 16})
    assert (train.status_code, sample.status_code) == (201, 201), (train.text, sample.text)
    failed_train = run(small, sessions, alice, train.json()["id"])
    failed_sample = run(small, sessions, alice, sample.json()["id"])
    # Then each failed with too_large before any step, naming the field, the need and what the worker has
    assert (failed_train.state, failed_train.error_code) == ("failed", "too_large"), failed_train.error_message
    assert "params.batch_size: a batch of 16 at 16 px needs about" in (failed_train.error_message or "")
    assert "this worker has 64 MiB available" in (failed_train.error_message or "")
    assert failed_train.progress_step == 0
    assert (failed_sample.state, failed_sample.error_code) == ("failed", "too_large"), failed_sample.error_message
    assert "params.n: 16 images needs about" in (failed_sample.error_message or "")
    # And the same sample job shape runs on the worker with room
    again = submit(client, alice, "gan.sample", {"source_job": trained.json()["id"], "n": 16})
    assert run(worker, sessions, alice, again.json()["id"]).state == "succeeded"
