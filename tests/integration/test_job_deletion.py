"""DELETE /v1/jobs/{id} and /v1/uploads/{id} against the real API, Postgres and the S3 server, with the worker runtime and the purge
(workers/lifecycle.py) in this process: a deleted job is a 404 at once and, after the purge, leaves no object
under its prefix and no row; repeats are fine; a queued job never runs; a purge that dies half way, or never
starts because the API died after marking, is finished by the reconciler's pass, and nothing else goes; a
worker whose job was purged under it does not put objects back. Running jobs on real workers:
tests/e2e/test_pipeline.py. Given / When / Then."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from shared.queue import make_celery
from shared.storage import S3ObjectStore, job_prefix, prepared_prefix, upload_prefix
from tests.conftest import Caller
from tests.support.images import png

pytest.importorskip("torch")

from tests.support.runs import TINY_GAN, in_process_worker, submitted, trained
from workers import lifecycle
from workers.engines import execute
from workers.hooks import StopRequested
from workers.reconciler import reconcile
from workers.runtime import JobRunner, WorkerContext, run_job

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield in_process_worker(settings, "deletion-test")


def keys(store: S3ObjectStore, job_id: str) -> set[str]:
    return {
        o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=job_prefix(job_id), recursive=True)
    }


def counts(sessions: sessionmaker[Session], job_id: str) -> dict[str, int]:
    """Rows the job has in every table that holds its data."""
    with transaction(sessions) as session:
        return {
            table: int(session.scalar(text(f"SELECT count(*) FROM {table} WHERE {column} = :j"), {"j": job_id}) or 0)
            for table, column in (
                ("jobs", "id"), ("metrics", "job_id"), ("artifacts", "job_id"), ("job_events", "job_id"),
            )
        }  # fmt: skip


def test_a_deleted_job_is_gone_at_once_and_after_the_purge_leaves_no_object_and_no_row(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], store: S3ObjectStore, worker: WorkerContext
) -> None:
    # Given two finished jobs with checkpoints, samples, weights, metrics and events
    doomed, kept = trained(client, alice, worker), trained(client, alice, worker, seed=3)
    assert any("/checkpoints/" in k for k in keys(store, doomed)) and keys(store, kept)
    before = counts(sessions, kept)
    assert min(counts(sessions, doomed).values()) > 0
    # When one is deleted
    response = client.delete(f"/v1/jobs/{doomed}", headers=alice.headers)
    # Then the answer is 202 and the job is a 404 for every read at once, and gone from the listing
    assert response.status_code == 202, response.text
    assert response.json() == {
        "id": doomed, "state": "deleting", "stopping": False, "detail": "its data is being removed",
    }  # fmt: skip
    for path in ("", "/metrics", "/artifacts"):
        assert client.get(f"/v1/jobs/{doomed}{path}", headers=alice.headers).status_code == 404, path
    listed = {j["id"] for j in client.get("/v1/jobs?limit=100", headers=alice.headers).json()["items"]}
    assert doomed not in listed and kept in listed
    assert client.post(f"/v1/jobs/{doomed}/cancel", headers=alice.headers).status_code == 404
    # And deleting again before the purge is another 202
    assert client.delete(f"/v1/jobs/{doomed}", headers=alice.headers).status_code == 202
    # When the purge runs
    assert lifecycle.purge_deleted(worker) == 1
    # Then no object is left under its prefix and no row in any table; the other job has all of its own
    assert keys(store, doomed) == set()
    assert counts(sessions, doomed) == {"jobs": 0, "metrics": 0, "artifacts": 0, "job_events": 0}
    assert counts(sessions, kept) == before and keys(store, kept)
    # And a DELETE now is a 404, and a second purge finds nothing to do
    assert client.delete(f"/v1/jobs/{doomed}", headers=alice.headers).status_code == 404
    assert lifecycle.purge_deleted(worker) == 0


def test_another_tenants_job_is_a_404_and_stays(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    job_id = trained(client, alice, worker)
    refused = client.delete(f"/v1/jobs/{job_id}", headers=bob.headers)
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"]["message"] == f"job {job_id} not found"
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()["state"] == "succeeded"
    assert lifecycle.purge_deleted(worker) == 0 and counts(sessions, job_id)["jobs"] == 1


def test_a_deleted_queued_job_is_cancelled_never_runs_and_is_purged(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    # Given a queued job
    job_id = submitted(client, alice)
    # When it is deleted, Then it was cancelled in the same transaction: no worker can claim it
    assert client.delete(f"/v1/jobs/{job_id}", headers=alice.headers).json()["stopping"] is False
    with transaction(sessions) as session:
        state = session.scalar(text("SELECT state FROM jobs WHERE id = :j"), {"j": job_id})
    assert state == "cancelled"
    assert run_job(worker, uuid.UUID(job_id), execute, exact=True) == "skipped"
    # And the purge removes it
    assert lifecycle.purge_deleted(worker) == 1 and counts(sessions, job_id)["jobs"] == 0


def test_a_purge_that_died_half_way_or_never_started_is_finished_by_the_reconciler_and_nothing_else_goes(
    client: TestClient,
    alice: Caller,
    bob: Caller,
    sessions: sessionmaker[Session],
    store: S3ObjectStore,
    settings: Settings,
    worker: WorkerContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given four finished jobs: two to delete, one of alice's to keep, and one of bob's
    half, unsent, kept, bobs = (trained(client, alice, worker), trained(client, alice, worker),
                                trained(client, alice, worker), trained(client, bob, worker))  # fmt: skip
    kept_before, bobs_before = (counts(sessions, kept), keys(store, kept)), (counts(sessions, bobs), keys(store, bobs))
    # When the purge of one dies after its objects went and before its rows did (the database lost mid-purge)
    assert client.delete(f"/v1/jobs/{half}", headers=alice.headers).status_code == 202

    def lost(*_args: Any, **_kw: Any) -> int:
        raise ConnectionError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(queries, "delete_metric_batch", lost)
        assert lifecycle.purge_deleted(worker) == 0
    assert keys(store, half) == set() and counts(sessions, half)["metrics"] > 0
    assert client.get(f"/v1/jobs/{half}", headers=alice.headers).status_code == 404  # still gone for the API
    # And the other is marked the way the API marks it, but the API dies before it can ask for the purge
    with transaction(sessions) as session:
        queries.mark_job_deleted(session, tenant_id=alice.tenant_id, job_id=uuid.UUID(unsent))
    # When the reconciler makes its pass
    counted = reconcile(worker, make_celery(settings))
    # Then both are purged completely
    assert counted["purged"] == 2
    for job_id in (half, unsent):
        assert keys(store, job_id) == set()
        assert counts(sessions, job_id) == {"jobs": 0, "metrics": 0, "artifacts": 0, "job_events": 0}
    # And nothing else was deleted: alice's other job and bob's have every row and object they had
    assert (counts(sessions, kept), keys(store, kept)) == kept_before
    assert (counts(sessions, bobs), keys(store, bobs)) == bobs_before


def test_a_worker_whose_job_was_purged_under_it_puts_no_object_back(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], store: S3ObjectStore, worker: WorkerContext
) -> None:
    # Given a job whose worker froze mid-run (a zombie) while the job was deleted, its lease ran out, the
    # reconciler cancelled it and the purge removed everything
    job_id = submitted(client, alice)
    uploaded: list[str] = []
    refused: list[StopRequested] = []

    def zombie(ctx: WorkerContext, claim: queries.Claim, runner: JobRunner) -> None:
        runner.save_artifact("samples/step-1.png", b"before", kind="sample", content_type="image/png")
        uploaded.extend(keys(store, job_id))
        assert client.delete(f"/v1/jobs/{job_id}", headers=alice.headers).status_code == 202
        with transaction(sessions) as session:  # what expire_leases does to a cancel-requested job past its lease
            session.execute(
                text("UPDATE jobs SET state = 'cancelled', lease_owner = NULL WHERE id = :j"), {"j": job_id}
            )
        assert lifecycle.purge_deleted(ctx) == 1
        # When it wakes and goes on to upload a checkpoint and a sample
        for upload in (lambda: runner.save_checkpoint(2, b"late"), lambda: runner.save_artifact(
                "samples/step-2.png", b"late", kind="sample", content_type="image/png")):  # fmt: skip
            try:
                upload()
            except StopRequested as stop:
                refused.append(stop)
        raise refused[-1]  # as the training loops do: the attempt ends as lost

    assert run_job(worker, uuid.UUID(job_id), zombie, exact=True) == "lost"
    # Then both uploads were refused as a lost lease, before anything was written: the prefix stays empty
    assert len(uploaded) == 1
    assert [stop.reason for stop in refused] == ["lease_lost", "lease_lost"]
    assert keys(store, job_id) == set()
    assert counts(sessions, job_id)["jobs"] == 0


def uploaded(client: TestClient, caller: Caller, count: int = 4) -> str:
    files = [("files", (f"{i}.png", png(16, 16, (40 * i, 90, 200)))) for i in range(count)]
    response = client.post("/v1/uploads", files=files, headers=caller.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def upload_keys(store: S3ObjectStore, caller: Caller, upload_id: str) -> set[str]:
    prefix = upload_prefix(caller.tenant_id, upload_id)
    return {o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)}


def test_an_upload_in_use_is_a_409_naming_the_jobs_and_once_free_is_deleted_with_every_file(
    client: TestClient, alice: Caller, bob: Caller, sessions: sessionmaker[Session], store: S3ObjectStore,
    worker: WorkerContext,
) -> None:  # fmt: skip
    # Given an upload that a finished job trained on and a queued job will train on
    upload_id = uploaded(client, alice)
    finished = trained(client, alice, worker, dataset=upload_id)
    queued = client.post(
        "/v1/jobs", json={"type": "gan.train", "params": TINY_GAN | {"dataset": upload_id}}, headers=alice.headers
    ).json()["id"]
    assert len(upload_keys(store, alice, upload_id)) == 4
    prepared = prepared_prefix(alice.tenant_id, upload_id)
    assert list(store.listing(prepared)), "the worker kept no decoded copy of the upload"
    # When it is deleted while the queued job uses it, Then a 409 names that job (not the finished one)
    refused = client.delete(f"/v1/uploads/{upload_id}", headers=alice.headers)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "upload_id"
    assert f"used by 1 queued or running job(s): {queued}; cancel or delete them first" in error["message"]
    assert client.get(f"/v1/uploads/{upload_id}", headers=alice.headers).status_code == 200
    # And bob's attempt is a 404 that changes nothing
    assert client.delete(f"/v1/uploads/{upload_id}", headers=bob.headers).status_code == 404
    # When the queued job is cancelled and the upload deleted
    assert client.post(f"/v1/jobs/{queued}/cancel", headers=alice.headers).status_code == 200
    deleted = client.delete(f"/v1/uploads/{upload_id}", headers=alice.headers)
    # Then it is a 202, gone for every read, and no new job can name it
    assert deleted.status_code == 202, deleted.text
    assert deleted.json() == {"id": upload_id, "state": "deleting", "detail": "its files are being removed"}
    assert client.get(f"/v1/uploads/{upload_id}", headers=alice.headers).status_code == 404
    assert upload_id not in {u["id"] for u in client.get("/v1/uploads", headers=alice.headers).json()["items"]}
    again = client.post("/v1/jobs", json={"type": "gan.train", "params": TINY_GAN | {"dataset": upload_id}},
                        headers=alice.headers)  # fmt: skip
    assert again.status_code == 422 and again.json()["error"]["field"] == "params.dataset", again.text
    assert client.delete(f"/v1/uploads/{upload_id}", headers=alice.headers).status_code == 202
    # When the purge runs, Then every file and the row are gone, and DELETE is a 404
    assert lifecycle.purge_deleted(worker) == 1
    assert upload_keys(store, alice, upload_id) == set()
    assert list(store.listing(prepared)) == []  # nor the decoded copies workers kept of it
    with transaction(sessions) as session:
        assert session.scalar(text("SELECT count(*) FROM uploads WHERE id = :u"), {"u": upload_id}) == 0
    assert client.delete(f"/v1/uploads/{upload_id}", headers=alice.headers).status_code == 404
    # And the job that trained on it keeps its outputs
    assert client.get(f"/v1/jobs/{finished}", headers=alice.headers).json()["state"] == "succeeded"
    assert keys(store, finished)


def waiting_for_a_lock(sessions: sessionmaker[Session]) -> bool:
    """Whether a backend of this database waits for a lock now."""
    with transaction(sessions) as probe:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return bool(probe.scalar(text(query)))


def test_a_submit_racing_an_upload_delete_is_named_by_the_409_or_refused_with_a_422_never_left_dangling(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given an upload, and a DELETE of it that holds the tenant lock and has found no job using it
    upload_id = uploaded(client, alice)
    results: list[Any] = []
    with transaction(sessions) as deleting:
        upload = queries.lock_upload(deleting, tenant_id=alice.tenant_id, upload_id=uuid.UUID(upload_id))
        assert queries.active_jobs(deleting, tenant_id=alice.tenant_id) == []
        # When a submit naming the upload passes its first check and waits for the tenant lock
        body = {"type": "gan.train", "params": TINY_GAN | {"dataset": upload_id}}
        racer = threading.Thread(
            target=lambda: results.append(client.post("/v1/jobs", json=body, headers=alice.headers))
        )
        racer.start()
        deadline = time.monotonic() + 30
        while not waiting_for_a_lock(sessions):
            assert time.monotonic() < deadline, "the submit never waited for the tenant lock"
            time.sleep(0.05)
        # And the DELETE marks the upload and commits
        queries.mark_upload_deleted(deleting, upload=upload)
    racer.join(timeout=30)
    assert not racer.is_alive(), "the submit did not answer"
    # Then the submit is refused as naming a missing upload, and no job row was left behind
    (response,) = results
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "params.dataset"
    with transaction(sessions) as session:
        named = session.scalar(text("SELECT count(*) FROM jobs WHERE params->>'dataset' = :u"), {"u": upload_id})
    assert named == 0


def test_a_sample_drawn_from_a_deleted_generator_keeps_its_own_outputs(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], store: S3ObjectStore, worker: WorkerContext
) -> None:
    # Given a gan.sample job that drew from a finished gan.train job's generator
    source = trained(client, alice, worker)
    created = client.post(
        "/v1/jobs", json={"type": "gan.sample", "params": {"source_job": source, "n": 4}}, headers=alice.headers
    )
    assert created.status_code == 201, created.text
    sample = created.json()["id"]
    assert run_job(worker, uuid.UUID(sample), execute, exact=True) == "succeeded"
    names = [a["name"] for a in client.get(f"/v1/jobs/{sample}/artifacts", headers=alice.headers).json()["items"]]
    before = keys(store, sample)
    assert names and before
    # When the source job is deleted and purged
    assert client.delete(f"/v1/jobs/{source}", headers=alice.headers).status_code == 202
    assert lifecycle.purge_deleted(worker) >= 1  # (an upload an earlier test marked may go in the same pass)
    assert keys(store, source) == set() and counts(sessions, source)["jobs"] == 0
    # Then the sample job still reads whole: its state, its artifacts and their bytes
    assert client.get(f"/v1/jobs/{sample}", headers=alice.headers).json()["state"] == "succeeded"
    assert keys(store, sample) == before
    for name in names:
        got = client.get(f"/v1/jobs/{sample}/artifacts/{name}", headers=alice.headers)
        assert got.status_code == 200 and got.content, name
