"""The vertical slice, end to end: HTTP → Postgres → Redis → a real Celery worker in
another process → S3 and Postgres → HTTP. Faults: a SIGKILLed worker, cancels,
duplicate deliveries."""

from __future__ import annotations

import io
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.queue import make_celery, send_run_job
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from tests.e2e.conftest import wait_job
from tests.support import services

pytestmark = pytest.mark.e2e

GAN_STEPS = 200
SMALL_GAN = {"dataset": "digits", "image_size": 32, "batch_size": 32, "ngf": 32, "ndf": 32, "seed": 3}


def metric_rows(sessions: sessionmaker[Session], job_id: str) -> list[tuple[str, int, int]]:
    """(name, step, attempt) of every stored metric row."""
    with sessions() as session:
        rows = session.execute(
            text("SELECT name, step, attempt FROM metrics WHERE job_id = :j ORDER BY name, step"), {"j": job_id}
        ).all()
    return [(r.name, r.step, r.attempt) for r in rows]


def test_gan_train_end_to_end_then_sample(
    client: TestClient, alice: Caller, worker: services.Proc, sessions: sessionmaker[Session], store: S3ObjectStore
) -> None:
    # Given a gan.train job of 200 CPU steps
    params = {**SMALL_GAN, "steps": GAN_STEPS, "checkpoint_every": 50, "sample_every": 100, "log_every": 1}
    job = client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=alice.headers).json()
    # When it runs to the end
    done = wait_job(client, alice, job["id"])
    # Then it succeeded on its first attempt with full progress
    assert done["state"] == "succeeded", done["error"]
    assert done["attempt"] == 1
    assert done["progress"]["step"] == done["progress"]["total"] == GAN_STEPS
    assert set(done["metrics"]) >= {"d_loss", "g_loss", "d_real", "d_fake"}
    # every logged step appears exactly once per metric
    rows = metric_rows(sessions, job["id"])
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert [s for n, s, _a in rows if n == name] == list(range(1, GAN_STEPS + 1)), name
    api = client.get(f"/v1/jobs/{job['id']}/metrics", params={"max_points": 1000}, headers=alice.headers).json()
    assert [p["step"] for p in api["series"]["g_loss"]] == list(range(1, GAN_STEPS + 1))
    # the sample grids download as valid PNGs
    names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts", headers=alice.headers).json()["items"]}
    assert {"generator.pt", "samples/step-0000100.png", "samples/step-0000200.png", "plots/losses.png"} <= names
    grid = client.get(f"/v1/jobs/{job['id']}/artifacts/samples/step-0000200.png", headers=alice.headers)
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(grid.content)) as img:
        img.verify()
    # the checkpoint is in the S3 server, where the job row points
    assert done["checkpoint"] == {"step": GAN_STEPS}
    with sessions() as session:
        key = session.execute(text("SELECT checkpoint_key FROM jobs WHERE id = :j"), {"j": job["id"]}).scalar_one()
    assert key.startswith(f"jobs/{job['id']}/checkpoints/") and store.exists(key)
    # And a gan.sample job on it succeeds with a grid and raw outputs
    sample = client.post(
        "/v1/jobs", json={"type": "gan.sample", "params": {"source_job": job["id"], "n": 16}}, headers=alice.headers
    ).json()
    sampled = wait_job(client, alice, sample["id"], timeout=60)
    assert sampled["state"] == "succeeded", sampled["error"]
    raw = client.get(f"/v1/jobs/{sample['id']}/artifacts/samples.npy", headers=alice.headers)
    array = np.load(io.BytesIO(raw.content))
    assert array.shape == (16, 1, 32, 32) and array.dtype == np.float32
    assert array.min() >= -1.0 and array.max() <= 1.0
    png = client.get(f"/v1/jobs/{sample['id']}/artifacts/samples.png", headers=alice.headers)
    assert png.content.startswith(b"\x89PNG")
    # a presigned URL is offered where the store has one
    redirect = client.get(
        f"/v1/jobs/{sample['id']}/artifacts/samples.png",
        params={"redirect": "true"},
        headers=alice.headers,
        follow_redirects=False,
    )
    assert redirect.status_code == 307 and "X-Amz-Signature" in redirect.headers["location"]


def test_style_transfer_end_to_end(client: TestClient, alice: Caller, worker: services.Proc) -> None:
    params = {"content": "astronaut", "styles": ["coffee"], "size": 64, "steps": 40, "weights": "random"}
    job = client.post("/v1/jobs", json={"type": "style.transfer", "params": params}, headers=alice.headers).json()
    done = wait_job(client, alice, job["id"])
    assert done["state"] == "succeeded", done["error"]
    out = client.get(f"/v1/jobs/{job['id']}/artifacts/output.png", headers=alice.headers)
    with Image.open(io.BytesIO(out.content)) as img:
        assert img.format == "PNG" and max(img.size) == 64
    series = client.get(f"/v1/jobs/{job['id']}/metrics", params={"max_points": 1000}, headers=alice.headers).json()
    assert set(series["names"]) >= {"content_loss", "style_loss", "tv_loss", "total_loss"}
    style = series["series"]["style_loss"]
    assert len(style) == 40
    assert style[0]["value"] >= 10 * style[-1]["value"], (style[0], style[-1])


STYLE_TRAIN_STEPS = 30
SMALL_STYLE_TRAIN = {
    "styles": ["coffee"],
    "size": 48,
    "steps": STYLE_TRAIN_STEPS,
    "batch_size": 2,
    "width": 8,
    "residual_blocks": 1,
    "weights": "random",
    "preview_every": 10,
    "checkpoint_every": 10,
}


def test_style_train_end_to_end_gives_a_model_that_loads(
    client: TestClient, alice: Caller, worker: services.Proc
) -> None:
    from workers.style.johnson import load_model

    # Given a small style.train job on the built-in content pictures
    job = client.post(
        "/v1/jobs", json={"type": "style.train", "params": SMALL_STYLE_TRAIN}, headers=alice.headers
    ).json()
    # When it runs to the end on the worker
    done = wait_job(client, alice, job["id"])
    # Then it succeeded with full progress and a loss history of every step
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"]["step"] == done["progress"]["total"] == STYLE_TRAIN_STEPS
    series = client.get(f"/v1/jobs/{job['id']}/metrics", params={"max_points": 1000}, headers=alice.headers).json()
    assert set(series["names"]) >= {"content_loss", "style_loss", "tv_loss", "total_loss"}
    assert [p["step"] for p in series["series"]["style_loss"]] == list(range(1, STYLE_TRAIN_STEPS + 1))
    # And its artifacts: previews every 10 steps, the final preview, the model and its card
    names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts", headers=alice.headers).json()["items"]}
    previews = {f"previews/step-{s:06d}.png" for s in (10, 20, 30)}
    assert names >= previews | {"preview.png", "model.safetensors", "model.json"}, names
    card = client.get(f"/v1/jobs/{job['id']}/artifacts/model.json", headers=alice.headers).json()
    assert (card["method"], card["styles"]) == ("johnson", ["coffee"]), card
    model = client.get(f"/v1/jobs/{job['id']}/artifacts/model.safetensors", headers=alice.headers)
    assert model.status_code == 200
    net = load_model(model.content)
    assert sum(p.numel() for p in net.parameters()) > 0
    with Image.open(
        io.BytesIO(client.get(f"/v1/jobs/{job['id']}/artifacts/preview.png", headers=alice.headers).content)
    ) as img:
        assert img.format == "PNG"
    # And the model is listed, and styles a picture through the worker within one Prefer: wait request
    assert [m["id"] for m in client.get("/v1/models", headers=alice.headers).json()["items"]] == [job["id"]]
    applied = client.post(
        "/v1/jobs",
        json={"type": "style.apply", "params": {"model": job["id"], "images": ["astronaut"], "size": 64}},
        headers={**alice.headers, "Prefer": "wait=60"},
    )
    assert applied.status_code == 201, applied.text
    assert applied.headers["Preference-Applied"] == "wait=60"
    assert applied.json()["state"] == "succeeded", applied.json()["error"]
    out = client.get(f"/v1/jobs/{applied.json()['id']}/artifacts/output.png", headers=alice.headers)
    with Image.open(io.BytesIO(out.content)) as img:
        assert img.format == "PNG" and max(img.size) == 64


def test_cancel_running_job_checkpoints_and_stops(client: TestClient, alice: Caller, worker: services.Proc) -> None:
    params = {**SMALL_GAN, "steps": 5000, "checkpoint_every": 1000}
    job = client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=alice.headers).json()
    running = wait_job(client, alice, job["id"], until=lambda j: j["progress"]["step"] >= 5, timeout=60)
    assert running["state"] == "running"
    asked_at = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers).json()
    assert asked_at["cancel_requested"] is True
    done = wait_job(client, alice, job["id"], timeout=30)
    assert done["state"] == "cancelled"
    # it stopped within a few steps of the request (heartbeat period, in steps), with a checkpoint
    assert done["checkpoint"] is not None
    assert done["checkpoint"]["step"] == done["progress"]["step"]
    assert done["progress"]["step"] < 5000


def test_deleting_a_running_job_stops_it_then_removes_every_object_and_row(
    client: TestClient, alice: Caller, worker: services.Proc, sessions: sessionmaker[Session], store: S3ObjectStore
) -> None:
    # Given a long job running on a real worker, with a checkpoint and sample grids in the bucket
    params = {**SMALL_GAN, "steps": 5000, "checkpoint_every": 10, "sample_every": 10}
    job_id = client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=alice.headers).json()["id"]
    wait_job(client, alice, job_id, until=lambda j: (j["checkpoint"] or {}).get("step", 0) >= 10, timeout=120)
    prefix = f"jobs/{job_id}/"

    def objects() -> list[str]:
        return [o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)]

    assert objects()
    # When it is deleted
    response = client.delete(f"/v1/jobs/{job_id}", headers=alice.headers)
    # Then the answer is 202 saying it stops first, and the job is a 404 at once
    assert response.status_code == 202, response.text
    assert response.json()["stopping"] is True
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).status_code == 404
    # And once the worker has stopped it and the purge has run, DELETE is a 404 too
    deadline = time.monotonic() + 60
    while client.delete(f"/v1/jobs/{job_id}", headers=alice.headers).status_code == 202:
        assert time.monotonic() < deadline, "the deleted job was not purged"
        time.sleep(0.3)
    # And nothing of it is left, nor comes back (the purge waits for its runner to have finished: state not running)
    time.sleep(2.0)
    assert objects() == []
    with sessions() as session:
        left = session.execute(
            text(
                "SELECT (SELECT count(*) FROM jobs WHERE id = :j) + (SELECT count(*) FROM metrics WHERE job_id = :j)"
                " + (SELECT count(*) FROM artifacts WHERE job_id = :j)"
            ),
            {"j": job_id},
        ).scalar_one()
    assert left == 0
    # And the worker trains the next job as usual
    nxt = client.post(
        "/v1/jobs", json={"type": "gan.train", "params": {**SMALL_GAN, "steps": 5}}, headers=alice.headers
    )
    assert wait_job(client, alice, nxt.json()["id"], timeout=120)["state"] == "succeeded"


def test_cancelled_queued_job_never_runs_and_duplicates_train_once(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    worker: services.Proc,
    sessions: sessionmaker[Session],
) -> None:
    # Given a long job occupying the only worker slot, and two jobs queued behind it
    blocker = client.post(
        "/v1/jobs", json={"type": "gan.train", "params": {**SMALL_GAN, "steps": 60}}, headers=alice.headers
    ).json()
    queued = client.post(
        "/v1/jobs", json={"type": "gan.train", "params": {**SMALL_GAN, "steps": 10}}, headers=alice.headers
    ).json()
    dup = client.post(
        "/v1/jobs", json={"type": "gan.train", "params": {**SMALL_GAN, "steps": 30}}, headers=alice.headers
    ).json()
    # When the first queued job is cancelled, and the other's id is delivered twice more
    assert client.post(f"/v1/jobs/{queued['id']}/cancel", headers=alice.headers).json()["state"] == "cancelled"
    app = make_celery(settings)
    send_run_job(app, job_id=dup["id"], queue="gpu")
    send_run_job(app, job_id=dup["id"], queue="gpu")
    # Then the duplicates train once: one attempt, each step once
    assert wait_job(client, alice, blocker["id"])["state"] == "succeeded"
    done = wait_job(client, alice, dup["id"])
    assert done["state"] == "succeeded" and done["attempt"] == 1
    rows = metric_rows(sessions, dup["id"])
    assert [s for n, s, _a in rows if n == "d_loss"] == list(range(1, 31))
    assert {a for _n, _s, a in rows} == {1}
    deadline = time.monotonic() + 20
    while worker.log().count(f"job {dup['id']} is not claimable") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    # (the reconciler may add one more harmless duplicate while a message sits prefetched)
    assert worker.log().count(f"job {dup['id']} is not claimable") >= 2
    # and the cancelled job never ran, though its message was delivered
    never = client.get(f"/v1/jobs/{queued['id']}", headers=alice.headers).json()
    assert never["state"] == "cancelled" and never["attempt"] == 0 and never["started_at"] is None
    assert f"job {queued['id']} is not claimable" in worker.log()


def test_worker_killed_mid_training_resumes_from_checkpoint(
    client: TestClient,
    alice: Caller,
    settings: Settings,
    log_dir: Path,
    worker: services.Proc,
    sessions: sessionmaker[Session],
) -> None:
    steps = 200
    params = {**SMALL_GAN, "steps": steps, "checkpoint_every": 25, "sample_every": 1000}
    job = client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=alice.headers).json()
    # Given the job has a committed checkpoint and has moved past it
    seen = wait_job(client, alice, job["id"], until=lambda j: (j["checkpoint"] or {}).get("step", 0) >= 50, timeout=180)
    assert seen["state"] == "running" and seen["attempt"] == 1
    # When the worker (parent and pool child) is SIGKILLed and a new worker starts
    worker.signal_group(signal.SIGKILL)
    assert worker.proc is not None
    worker.proc.wait(10)
    killed_at = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()
    ckpt_step = killed_at["checkpoint"]["step"]
    replacement = services.celery_worker(settings, log_dir, f"w2-{uuid.uuid4().hex[:6]}").start()
    try:
        replacement.wait_for_log("ready.")
        done = wait_job(client, alice, job["id"], timeout=240)
    finally:
        replacement.stop()
        worker.start().wait_for_log("ready.", start=len(worker.log()))  # give the module its worker back
    # Then it succeeded on attempt 2, resuming from the last checkpoint
    assert done["state"] == "succeeded", done["error"]
    assert done["attempt"] == 2
    assert done["resumed_from_step"] == ckpt_step
    # and no step before the checkpoint was re-run; every step is stored exactly once
    rows = metric_rows(sessions, job["id"])
    d_loss = [(s, a) for n, s, a in rows if n == "d_loss"]
    assert [s for s, _a in d_loss] == list(range(1, steps + 1))
    by_attempt = {a: [s for s, b in d_loss if b == a] for a in (1, 2)}
    # attempt 1 wrote steps 1..checkpoint (and maybe a few more, overwritten since)
    assert by_attempt[1][:ckpt_step] == list(range(1, ckpt_step + 1)), (ckpt_step, by_attempt[1][-5:])
    # attempt 2 re-ran nothing before the checkpoint, and everything after it
    assert by_attempt[2] == list(range(ckpt_step + 1, steps + 1)), (ckpt_step, by_attempt[2][:5])
