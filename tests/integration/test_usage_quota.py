"""GET /v1/usage and the storage quota on the real API, Postgres and the S3 server, with the worker runtime in this
process: the numbers match the bucket's own listing and the tables' own counts, deleting stops counting at once,
and a tenant over its quota gets a clear 4xx on new jobs and uploads, and a job whose checkpoint would pass it
fails before writing it. Given / When / Then."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db.session import transaction
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from tests.support.images import png

pytest.importorskip("torch")

from tests.support.runs import TINY_GAN, in_process_worker, submitted
from workers.engines import execute
from workers.runtime import WorkerContext, run_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield in_process_worker(settings, "usage-test")


def bucket_bytes(store: S3ObjectStore, prefix: str, *, sections: tuple[str, ...] | None = None) -> int:
    """Bytes under ``prefix`` by the bucket's own listing (only the given job sections, if any)."""
    return sum(o.size for o in store.listing(prefix) if sections is None or o.key.split("/")[2] in sections)


def run(client: TestClient, caller: Caller, worker: WorkerContext, **params: Any) -> str:
    """A tiny job run by the runtime, whatever its outcome (a quota may fail it)."""
    job_id = submitted(client, caller, **params)
    run_job(worker, uuid.UUID(job_id), execute, exact=True)
    return job_id


def set_quota(sessions: sessionmaker[Session], caller: Caller, quota: int | None) -> None:
    with transaction(sessions) as session:
        session.execute(
            text("UPDATE tenants SET max_storage_bytes = :q WHERE id = :t"), {"q": quota, "t": caller.tenant_id}
        )


def test_usage_matches_the_bucket_and_the_tables_and_a_deleted_job_stops_counting_at_once(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session], store: S3ObjectStore,
    worker: WorkerContext,
) -> None:  # fmt: skip
    # Given two finished jobs and an upload of alice's
    started = time.monotonic()
    jobs = [run(client, alice, worker), run(client, alice, worker, seed=4)]
    elapsed = time.monotonic() - started
    files = [("files", (f"{i}.png", png(16, 16, (30 * i, 60, 90)))) for i in range(5)]
    assert client.post("/v1/uploads", files=files, headers=alice.headers).status_code == 201
    # When she asks for her usage
    usage = client.get("/v1/usage", headers=alice.headers).json()
    # Then every number is what the bucket lists and the tables count
    artifacts = sum(bucket_bytes(store, f"jobs/{j}/", sections=("samples", "outputs")) for j in jobs)
    checkpoints = sum(bucket_bytes(store, f"jobs/{j}/", sections=("checkpoints",)) for j in jobs)
    uploads = bucket_bytes(store, f"uploads/{alice.tenant_id}/")
    assert usage["stored"] == {
        "artifacts": artifacts, "checkpoints": checkpoints, "uploads": uploads,
        "total": artifacts + checkpoints + uploads,
    }  # fmt: skip
    assert min(artifacts, checkpoints, uploads) > 0
    assert all(len(list(store.listing(f"jobs/{j}/checkpoints/"))) == 1 for j in jobs)  # one kept per job
    with transaction(sessions) as session:
        rows = session.scalar(text("SELECT count(*) FROM metrics WHERE job_id = ANY(CAST(:j AS uuid[]))"), {"j": jobs})
    assert usage["metric_rows"] == rows > 0
    assert usage["jobs"] == 2
    assert 0 < usage["gpu_seconds_this_month"] <= elapsed + 1.0
    assert usage["storage_quota_bytes"] is None and usage["storage_left_bytes"] is None
    # And bob's usage is his own: nothing
    theirs = client.get("/v1/usage", headers=bob.headers).json()
    assert theirs["stored"]["total"] == 0 and theirs["metric_rows"] == 0 and theirs["jobs"] == 0
    # When one job is deleted, Then its bytes and rows stop counting before the purge
    assert client.delete(f"/v1/jobs/{jobs[0]}", headers=alice.headers).status_code == 202
    after = client.get("/v1/usage", headers=alice.headers).json()
    kept_artifacts = bucket_bytes(store, f"jobs/{jobs[1]}/", sections=("samples", "outputs"))
    assert after["stored"]["artifacts"] == kept_artifacts
    assert after["jobs"] == 1 and after["metric_rows"] < usage["metric_rows"]


def test_over_its_quota_a_tenant_gets_clear_4xx_and_a_checkpoint_that_would_pass_it_fails_before_it_is_written(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], store: S3ObjectStore, worker: WorkerContext
) -> None:
    # Given a finished job, and a quota just 10 kB above what alice stores
    run(client, alice, worker)
    stored = client.get("/v1/usage", headers=alice.headers).json()["stored"]["total"]
    set_quota(sessions, alice, stored + 10_000)
    assert client.get("/v1/usage", headers=alice.headers).json()["storage_left_bytes"] == 10_000
    try:
        # When a job runs whose first checkpoint is bigger than the room left
        job_id = run(client, alice, worker)
        job = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
        # Then it failed, naming the checkpoint, the quota and what to delete, and wrote no checkpoint
        assert job["state"] == "failed", job
        assert job["error"]["code"] == "storage_quota_exceeded"
        message = job["error"]["message"]
        assert message.startswith("the checkpoint at step 3 (") and "storage quota of" in message
        assert "delete jobs (DELETE /v1/jobs/{id}, `atelier rm`) or uploads" in message
        assert list(store.listing(f"jobs/{job_id}/checkpoints/")) == []
        # When the quota is then set below what she stores
        set_quota(sessions, alice, 1000)
        before = {o.key for o in store.listing(f"uploads/{alice.tenant_id}/")}
        refused_job = client.post("/v1/jobs", json={"type": "gan.train", "params": TINY_GAN}, headers=alice.headers)
        refused_upload = client.post(
            "/v1/uploads", files=[("files", ("a.png", png(16, 16, (1, 2, 3))))], headers=alice.headers
        )
        # Then a new job is a 429 and a new upload a 413, each saying what she stores and what to delete
        assert refused_job.status_code == 429, refused_job.text
        assert refused_upload.status_code == 413, refused_upload.text
        for refused in (refused_job, refused_upload):
            error = refused.json()["error"]["message"]
            assert error.startswith("storage quota: the tenant stores ") and "storage quota of 1000 B" in error
            assert "delete jobs" in error
        # And the refused upload left no object behind
        assert {o.key for o in store.listing(f"uploads/{alice.tenant_id}/")} == before
    finally:
        set_quota(sessions, alice, None)
    # And with no quota she submits again
    assert (
        client.post("/v1/jobs", json={"type": "gan.train", "params": TINY_GAN}, headers=alice.headers).status_code
        == 201
    )
