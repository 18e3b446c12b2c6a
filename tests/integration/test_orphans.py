"""The orphan collector (workers/lifecycle.py collect_orphans) on the real S3 server and Postgres: objects of every
key shape the code writes are planted beside a real job's and a real upload's, and exactly the orphans older than
the grace go; live objects, young ones, shared assets and keys of shapes the code never writes stay.
Given / When / Then."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

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

from tests.support.runs import in_process_worker, trained
from workers.engines import prepared_key
from workers.gan.features import CLASSIFIER_KEY
from workers.lifecycle import collect_orphans
from workers.runtime import WorkerContext

pytestmark = pytest.mark.integration

GRACE_S = 3.0


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield in_process_worker(settings, "orphans-test")


def everything(store: S3ObjectStore) -> set[str]:
    return {o.object_name or "" for o in store.client.list_objects(store.bucket, recursive=True)}


def test_exactly_the_orphans_older_than_the_grace_are_removed(
    client: TestClient,
    alice: Caller,
    sessions: sessionmaker[Session],
    store: S3ObjectStore,
    worker: WorkerContext,
) -> None:
    # Given a finished job (its pointer moved from the step-3 checkpoint to step 6) and an upload
    job_id = trained(client, alice, worker)
    files = [("files", (f"{i}.png", png(16, 16, (50 * i, 20, 90)))) for i in range(3)]
    upload_id = client.post("/v1/uploads", files=files, headers=alice.headers).json()["id"]
    with transaction(sessions) as session:
        pointer = session.scalar(text("SELECT checkpoint_key FROM jobs WHERE id = :j"), {"j": job_id})
        recorded = set(session.scalars(text("SELECT key FROM artifacts WHERE job_id = :j"), {"j": job_id}))
        listed = {
            f["key"] for f in session.scalar(text("SELECT manifest FROM uploads WHERE id = :u"), {"u": upload_id})
        }
    superseded = f"jobs/{job_id}/checkpoints/a1-step-00000003.pt"
    assert pointer == f"jobs/{job_id}/checkpoints/a1-step-00000006.pt"
    assert superseded not in everything(store)  # the runner deleted the checkpoint its pointer replaced
    tenant, gone = alice.tenant_id, uuid.uuid4()
    # And planted objects of every other shape the code writes, live and orphaned
    live = {
        prepared_key(tenant, upload_id, image_size=16, channels=1),  # a decoded copy of an upload that exists
        CLASSIFIER_KEY,  # a shared asset: never scanned
        f"jobs/{job_id}/notes/readme.txt",  # a shape the code never writes: not ours to judge
        "jobs/not-a-job/outputs/a1/x.png",
        "uploads/readme.txt",
    }
    orphans = {
        superseded: "superseded_checkpoint",  # as if the runner's delete of it had failed
        f"jobs/{job_id}/checkpoints/a0-step-00000002.pt": "superseded_checkpoint",  # a fenced-out attempt's
        f"jobs/{job_id}/samples/a0/step-1.png": "unrecorded_artifact",  # uploaded, never recorded
        f"jobs/{job_id}/outputs/a2/generator.pt": "unrecorded_artifact",
        f"jobs/{gone}/checkpoints/a1-step-00000010.pt": "job_gone",  # a purged job's zombie upload
        f"jobs/{gone}/outputs/a1/final.png": "job_gone",
        f"uploads/{tenant}/{upload_id}/stray.png": "unlisted_upload_file",
        f"uploads/{tenant}/{gone}/0.png": "upload_gone",  # an upload whose recording failed half way
        f"prepared/{tenant}/{gone}/16px-1ch-v1.pt": "prepared_of_gone_upload",
    }
    for key in live | set(orphans) - everything(store):
        store.put(key, b"planted")
    time.sleep(GRACE_S + 2.0)
    # And orphans written just now (an upload or checkpoint that may still be in flight)
    young = {f"jobs/{uuid.uuid4()}/checkpoints/a1-step-00000001.pt", f"uploads/{tenant}/{uuid.uuid4()}/0.png"}
    for key in young:
        store.put(key, b"in flight")
    before = everything(store)
    sizes = {o.key: o.size for o in store.listing("")}
    # When the collector runs with the grace
    seen = collect_orphans(worker, grace_s=GRACE_S)
    # Then exactly the old orphans were removed, each for its reason, and everything else is still there
    assert sorted(seen.removed_keys) == sorted(orphans)
    assert dict(seen.removed) == {why: list(orphans.values()).count(why) for why in set(orphans.values())}
    after = everything(store)
    assert after == before - set(orphans)
    assert {pointer} | recorded | listed | live | young <= after
    report = seen.report()
    assert report["removed"] == len(orphans) and report["young"] == len(young)
    assert report["unknown"] == 3  # the two odd shapes under jobs/ and one under uploads/
    assert report["removed_bytes"] == sum(sizes[k] for k in orphans)
    # And the job and the upload still read whole
    assert client.get(f"/v1/jobs/{job_id}/artifacts/samples/final.png", headers=alice.headers).status_code == 200
    assert client.get(f"/v1/uploads/{upload_id}", headers=alice.headers).status_code == 200
    # When it runs again, Then it finds nothing more to remove
    assert collect_orphans(worker, grace_s=GRACE_S).report()["removed"] == 0
