"""Tiny gan.train runs through the real worker runtime in the test's own process (the storage, deletion, usage
and retention tests): the API submits, ``run_job`` claims and trains, Postgres and the S3 server keep the rest."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from shared.config import Settings
from tests.conftest import Caller
from workers.engines import execute
from workers.runtime import WorkerContext, run_job

# Two checkpoints (steps 3 and 6), sample grids, the generator: every kind of object a run stores, in a second.
TINY_GAN: dict[str, Any] = {
    "dataset": "digits", "image_size": 16, "steps": 6, "batch_size": 16, "ngf": 8, "ndf": 8, "nz": 8,
    "sample_every": 3, "checkpoint_every": 3, "image_metrics": False,
}  # fmt: skip


def in_process_worker(settings: Settings, name: str) -> WorkerContext:
    """A worker context named ``name`` on the test's services."""
    return WorkerContext.build(settings.model_copy(update={"worker_name": name}))


def submitted(client: TestClient, caller: Caller, **params: Any) -> str:
    """A tiny gan.train job submitted through the API (queued); its id."""
    response = client.post("/v1/jobs", json={"type": "gan.train", "params": TINY_GAN | params}, headers=caller.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def trained(client: TestClient, caller: Caller, worker: WorkerContext, **params: Any) -> str:
    """A tiny gan.train job submitted through the API and run to success by the worker runtime; its id."""
    job_id = submitted(client, caller, **params)
    outcome = run_job(worker, uuid.UUID(job_id), execute, exact=True)
    assert outcome == "succeeded", outcome
    return job_id
