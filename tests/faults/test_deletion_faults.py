"""A deletion whose API process is killed after it marked the job, with no purge yet: real processes (the API under
uvicorn, Celery workers, beat), Postgres, Redis and the S3 server. The purge message, if it was sent, is dropped
from Redis too, so only the reconciler's sweep can finish the deletion: it does, and nothing else goes.
Given / When / Then."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.jobs.params import QUEUE_CPU
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from tests.support import services

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

TINY: dict[str, Any] = {
    "dataset": "digits", "image_size": 16, "steps": 20, "batch_size": 16, "ngf": 8, "ndf": 8, "nz": 8,
    "sample_every": 10, "checkpoint_every": 10, "image_metrics": False,
}  # fmt: skip
DEADLINE_S = 120.0
HTTP_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def api_url(settings: Settings, log_dir: Path) -> Iterator[tuple[str, services.Proc]]:
    port = services.free_port()
    proc = services.api_server(settings, log_dir, port, name="api-deletion").start()
    proc.wait_for_log("Application startup complete", timeout=60)
    yield f"http://127.0.0.1:{port}", proc
    proc.stop()


def counts(sessions: sessionmaker[Session], job_id: str) -> tuple[int, int, int]:
    with sessions() as session:
        row = session.execute(
            text(
                "SELECT (SELECT count(*) FROM jobs WHERE id = :j), (SELECT count(*) FROM metrics WHERE job_id = :j),"
                " (SELECT count(*) FROM artifacts WHERE job_id = :j)"
            ),
            {"j": job_id},
        ).one()
    return int(row[0]), int(row[1]), int(row[2])


def objects(store: S3ObjectStore, job_id: str) -> set[str]:
    return {o.key for o in store.listing(f"jobs/{job_id}/")}


def test_a_deletion_whose_api_died_after_marking_is_finished_by_the_sweep_and_nothing_else_goes(
    api_url: tuple[str, services.Proc], alice: Caller, settings: Settings, log_dir: Path,
    sessions: sessionmaker[Session], store: S3ObjectStore,
) -> None:  # fmt: skip
    url, api = api_url
    http = httpx.Client(base_url=url, headers=alice.headers, timeout=HTTP_TIMEOUT_S)
    # Given two finished jobs, run by a training worker that is then stopped (no cpu worker, no beat yet)
    trainer = services.celery_worker(settings, log_dir, "deletion-trainer", queues="gpu").start()
    try:
        trainer.wait_for_log("ready.")
        ids = [http.post("/v1/jobs", json={"type": "gan.train", "params": TINY}).json()["id"] for _ in range(2)]
        deadline = time.monotonic() + DEADLINE_S
        while {http.get(f"/v1/jobs/{j}").json()["state"] for j in ids} != {"succeeded"}:
            assert time.monotonic() < deadline, "the jobs did not finish"
            time.sleep(0.5)
    finally:
        trainer.stop()
    doomed, kept = ids
    kept_before = (counts(sessions, kept), objects(store, kept))
    assert objects(store, doomed) and min(counts(sessions, doomed)) > 0
    # When the API marks one deleted and is killed at once
    assert http.delete(f"/v1/jobs/{doomed}").status_code == 202
    api.signal_group(signal.SIGKILL)
    api.proc.wait(10)  # type: ignore[union-attr]
    # And the purge message it may have sent is lost with Redis's cpu queue
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=HTTP_TIMEOUT_S)
    with client:
        for key in list(client.scan_iter(match=f"{QUEUE_CPU}*")):  # every priority list of the queue
            client.delete(key)
    # Then nothing is purged while no housekeeping runs: the rows are marked, the objects still there
    time.sleep(1.0)
    assert objects(store, doomed) and counts(sessions, doomed)[0] == 1
    # When beat and a cpu worker start, Then the reconciler's sweep finishes the deletion
    beat = services.celery_beat(settings, log_dir).start()
    housekeeper = services.celery_worker(settings, log_dir, "deletion-cpu", queues="cpu").start()
    try:
        housekeeper.wait_for_log("ready.")
        deadline = time.monotonic() + DEADLINE_S
        while counts(sessions, doomed) != (0, 0, 0) or objects(store, doomed):
            assert time.monotonic() < deadline, f"not purged: {counts(sessions, doomed)} {objects(store, doomed)}"
            time.sleep(0.5)
        assert f"purged job {doomed}" in housekeeper.log()
        assert "'purged': 1" in housekeeper.log()  # by the reconciler's pass (its counts), not a message
    finally:
        housekeeper.stop()
        beat.stop()
    # And nothing else was deleted: the other job has every row and object it had
    assert (counts(sessions, kept), objects(store, kept)) == kept_before
