"""gan.train in the worker runtime (in this process, on the real Postgres and S3 server).

Retraining on your own images: a folder of 64 px RGB pictures in class sub-folders is
uploaded through the API, a conditional job trains on it, and its sample grid shows the
classes, one per row. torchvision datasets: found in the worker's data cache, or a failed job
that says where to put them. The digits classifier behind the image metrics: trained once,
stored, reused. Each test reads Given / When / Then."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from tests.conftest import Caller
from tests.support.idx import digits_as_mnist, write_idx_dataset
from tests.support.images import png, zip_of

pytest.importorskip("torch")

from workers.engines import execute
from workers.gan.features import CLASSIFIER_KEY
from workers.gan.sample import GRID_PADDING
from workers.runtime import WorkerContext, run_job

pytestmark = pytest.mark.integration

SIZE = 64
PER_CLASS = 24
# Class -> (its colour, the RGB channel that colour lives in). Folders sort: blue, green, red.
CLASSES = {"blue": ((50, 70, 230), 2), "green": ((40, 200, 60), 1), "red": ((220, 40, 40), 0)}
MIN_CHANNEL_LEAD = 40  # grey levels by which a row's class channel beats the other two


def class_folder_zip(seed: int = 0) -> bytes:
    """PER_CLASS pictures per class: a jittered background of the class colour with dark blobs."""
    rng = np.random.default_rng(seed)
    entries: dict[str, bytes] = {}
    for name, (colour, _channel) in CLASSES.items():
        for i in range(PER_CLASS):
            background = tuple(int(np.clip(c + rng.integers(-40, 40), 0, 255)) for c in colour)
            image = Image.new("RGB", (80, 80), background)
            draw = ImageDraw.Draw(image)
            for _ in range(3):
                x, y = rng.integers(0, 60, 2)
                r = int(rng.integers(10, 25))
                draw.ellipse((int(x), int(y), int(x) + r, int(y) + r), fill=(20, 20, 20))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            entries[f"my-pictures/{name}/{i:02d}.png"] = buffer.getvalue()
    return zip_of(entries)


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    yield WorkerContext.build(settings.model_copy(update={"worker_name": "gan-test"}))


def test_your_own_images_train_a_grid_that_shows_the_classes(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    # Given a folder of 64 px RGB pictures in three class sub-folders, uploaded as a zip
    uploaded = client.post(
        "/v1/uploads",
        files=[("files", ("my-pictures.zip", class_folder_zip(), "application/zip"))],
        headers=alice.headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["classes"] == ["blue", "green", "red"]
    # When a conditional gan.train job trains on it at 64 px
    params = {
        "dataset": uploaded.json()["id"], "image_size": SIZE, "conditional": True, "steps": 300, "batch_size": 24,
        "ngf": 16, "ndf": 16, "nz": 32, "lr_g": 5e-4, "lr_d": 5e-4, "sample_every": 100, "checkpoint_every": 100,
        "log_every": 10, "seed": 1,
    }  # fmt: skip
    created = client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=alice.headers)
    assert created.status_code == 201, created.text
    job_id = uuid.UUID(created.json()["id"])
    assert run_job(worker, job_id, execute, exact=True) == "succeeded"
    with transaction(sessions) as session:
        assert queries.get_job(session, tenant_id=alice.tenant_id, job_id=job_id).state == "succeeded"
    # Then its final grid is one row per class (64 // 3 = 21 RGB pictures each)...
    grid_png = client.get(f"/v1/jobs/{job_id}/artifacts/samples/final.png", headers=alice.headers)
    assert grid_png.status_code == 200
    grid = np.asarray(Image.open(io.BytesIO(grid_png.content)).convert("RGB")).astype(float)
    cell = SIZE + GRID_PADDING
    assert grid.shape == (3 * cell + GRID_PADDING, 21 * cell + GRID_PADDING, 3)
    # ...and each row is its class: the class's colour channel leads the other two in that row
    for row, (name, (_colour, channel)) in enumerate(CLASSES.items()):
        pixels = grid[GRID_PADDING + row * cell : (row + 1) * cell].reshape(-1, 3).mean(axis=0)
        others = [pixels[c] for c in range(3) if c != channel]
        assert pixels[channel] > max(others) + MIN_CHANNEL_LEAD, (name, pixels.round(1).tolist())
    # And the run's loss curve and interpolation strip are there to look at
    names = {a["name"] for a in client.get(f"/v1/jobs/{job_id}/artifacts", headers=alice.headers).json()["items"]}
    assert {"plots/losses.png", "samples/interpolation.png", "generator.pt"} <= names


def test_a_torchvision_dataset_trains_from_the_cache_or_fails_saying_where_to_put_it(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    # Given a worker whose data cache holds MNIST's files (written from sklearn's digits), downloads off
    write_idx_dataset(tmp_path / "cache", "MNIST", *digits_as_mnist(200))
    cached = WorkerContext.build(
        settings.model_copy(
            update={"worker_name": "mnist-test", "data_cache_dir": tmp_path / "cache", "allow_data_download": False}
        )
    )
    empty = WorkerContext.build(
        settings.model_copy(
            update={"worker_name": "no-cache", "data_cache_dir": tmp_path / "empty", "allow_data_download": False}
        )
    )
    small = {"image_size": 16, "steps": 4, "batch_size": 16, "ngf": 8, "ndf": 8, "nz": 8, "sample_every": 4}

    def run(ctx: WorkerContext, dataset: str) -> tuple[str, str | None, str | None]:
        created = client.post(
            "/v1/jobs", json={"type": "gan.train", "params": small | {"dataset": dataset}}, headers=alice.headers
        )
        assert created.status_code == 201, created.text
        job_id = uuid.UUID(created.json()["id"])
        run_job(ctx, job_id, execute, exact=True)
        with transaction(sessions) as session:
            job = queries.get_job(session, tenant_id=alice.tenant_id, job_id=job_id)
            return job.state, job.error_code, job.error_message

    # When an mnist job runs on the worker with the cache, Then it trains
    assert run(cached, "mnist") == ("succeeded", None, None)
    # When a cifar10 job runs where it is not cached, Then it fails saying where it looked and what to do
    state, code, message = run(empty, "cifar10")
    assert (state, code) == ("failed", "dataset_unavailable")
    assert f"not in the worker's data cache at {tmp_path / 'empty'}" in (message or "")
    assert "downloading is disabled" in (message or "")


def test_the_digits_classifier_is_trained_once_stored_and_reused(
    client: TestClient,
    alice: Caller,
    sessions: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workers.engines as engines

    small = {"dataset": "digits", "image_size": 16, "steps": 6, "batch_size": 16, "ngf": 8, "ndf": 8, "nz": 8}

    def run(ctx: WorkerContext) -> str:
        created = client.post("/v1/jobs", json={"type": "gan.train", "params": small}, headers=alice.headers)
        job_id = created.json()["id"]
        assert run_job(ctx, uuid.UUID(job_id), execute, exact=True) == "succeeded"
        return str(job_id)

    # Given a store without the classifier and a worker process that has none in memory
    monkeypatch.setattr(engines, "_CLASSIFIERS", {})
    first_worker = WorkerContext.build(settings.model_copy(update={"worker_name": "first"}))
    first_worker.store.delete_prefix(CLASSIFIER_KEY)
    assert not first_worker.store.exists(CLASSIFIER_KEY)
    # When an image job runs, Then the classifier is trained and stored, and the job has image metrics
    first = run(first_worker)
    assert first_worker.store.exists(CLASSIFIER_KEY)
    metrics = client.get(
        f"/v1/jobs/{first}/metrics", params={"names": "fd,kid,precision,recall"}, headers=alice.headers
    )
    series = metrics.json()["series"]
    assert {name: [p["step"] for p in points] for name, points in series.items()} == {
        name: [6] for name in ("fd", "kid", "precision", "recall")
    }

    # When another worker (nothing in memory) runs the next job with training made impossible,
    # Then it reads the stored classifier and the job succeeds with its metrics
    def no_training() -> None:
        raise AssertionError("the classifier was trained again")

    monkeypatch.setattr(engines, "train_digits_classifier", no_training)
    second = run(WorkerContext.build(settings.model_copy(update={"worker_name": "second"})))
    fd = client.get(f"/v1/jobs/{second}/metrics", params={"names": "fd"}, headers=alice.headers).json()
    assert [p["step"] for p in fd["series"]["fd"]] == [6] and fd["series"]["fd"][0]["value"] > 0


def test_an_upload_is_decoded_once_per_size_and_reused(
    client: TestClient,
    alice: Caller,
    worker: WorkerContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import workers.engines as engines

    # Given an uploaded folder, and a count of how often the worker decodes uploaded images
    uploaded = client.post(
        "/v1/uploads",
        files=[("files", ("set.zip", class_folder_zip(seed=3), "application/zip"))],
        headers=alice.headers,
    ).json()["id"]
    decodes: list[int] = []
    real_decode = engines.gan_data.load_image_files

    def counted(files: list[tuple[str, bytes]], *, image_size: int, channels: int) -> object:
        decodes.append(image_size)
        return real_decode(files, image_size=image_size, channels=channels)

    monkeypatch.setattr(engines.gan_data, "load_image_files", counted)

    def run(image_size: int) -> None:
        params = {"dataset": uploaded, "image_size": image_size, "steps": 2, "batch_size": 8, "ngf": 8, "ndf": 8}
        created = client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=alice.headers)
        assert run_job(worker, uuid.UUID(created.json()["id"]), execute, exact=True) == "succeeded"

    # When three jobs train on it: at 16 px, at 16 px again, then at 32 px
    run(16)
    key = engines.prepared_key(alice.tenant_id, uploaded, image_size=16, channels=3)
    assert worker.store.exists(key)
    run(16)
    run(32)
    # Then it was decoded once per size: the second 16 px job read the packed array from storage
    assert decodes == [16, 32]
    assert worker.store.exists(engines.prepared_key(alice.tenant_id, uploaded, image_size=32, channels=3))


def test_a_tiny_upload_trains_without_image_metrics_and_says_why(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    # Given an upload of five pictures: too few for covariances and 3-NN radii
    entries = {f"p{i}.png": png(24, 24, color=(40 * i, 100, 200)) for i in range(5)}
    uploaded = client.post(
        "/v1/uploads", files=[("files", ("few.zip", zip_of(entries), "application/zip"))], headers=alice.headers
    ).json()["id"]
    params = {"dataset": uploaded, "image_size": 16, "steps": 3, "batch_size": 4, "ngf": 8, "ndf": 8}
    created = client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=alice.headers)
    # When it trains, Then it succeeds, records no fd, and its status says why
    job_id = uuid.UUID(created.json()["id"])
    assert run_job(worker, job_id, execute, exact=True) == "succeeded"
    job = client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()
    assert any("image metrics (fd, kid, precision, recall) need at least 20 images" in w for w in job["warnings"])
    assert "fd" not in job["metrics"]
