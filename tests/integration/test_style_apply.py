"""Trained style models and style.apply on the real API, Postgres and S3 server, with the worker runtime run in
this process: a tiny style.train makes a model; /v1/models lists, shows and deletes it; style.apply styles one
picture (output.png) or a batch (outputs.zip) with the model cached in the worker; bad input gets a 4xx or a
named job error.

Each test reads Given / When / Then."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from tests.support.images import png, zip_of

torch = pytest.importorskip("torch")

from workers.engines import _model_cache, execute  # noqa: E402 - needs torch
from workers.runtime import WorkerContext, run_job  # noqa: E402
from workers.style.images import load_builtin_image, to_tensor  # noqa: E402

pytestmark = pytest.mark.integration

TINY_TRAIN: dict[str, Any] = {
    "styles": ["coffee"],
    "size": 32,
    "steps": 3,
    "batch_size": 1,
    "width": 8,
    "residual_blocks": 1,
    "weights": "random",
    "content_layers": ["relu1_2"],
    "style_layers": ["relu1_2"],
    "preview_every": None,
}
SIZE = 48
TINY_ADAIN: dict[str, Any] = {
    "method": "adain",
    "styles": ["coffee", "rocket"],
    "size": 32,
    "steps": 3,
    "batch_size": 1,
    "width": 8,
    "weights": "random",
    "preview_every": None,
}


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    """The worker runtime in this process, on the real Postgres and S3 server."""
    yield WorkerContext.build(settings.model_copy(update={"worker_name": "style-apply-test"}))


def run(client: TestClient, caller: Caller, worker: WorkerContext, job_type: str, params: dict[str, Any]) -> Any:
    """Submit, run on the in-process worker, and read the job back."""
    created = client.post("/v1/jobs", json={"type": job_type, "params": params}, headers=caller.headers)
    assert created.status_code == 201, created.text
    run_job(worker, uuid.UUID(created.json()["id"]), execute, exact=True)
    return client.get(f"/v1/jobs/{created.json()['id']}", headers=caller.headers).json()


@pytest.fixture
def model(client: TestClient, alice: Caller, worker: WorkerContext) -> str:
    """The id of a style model alice trained (a tiny style.train run)."""
    job = run(client, alice, worker, "style.train", TINY_TRAIN)
    assert job["state"] == "succeeded", job["error"]
    return str(job["id"])


def png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def apply(client: TestClient, caller: Caller, worker: WorkerContext, **params: Any) -> Any:
    return run(client, caller, worker, "style.apply", {"size": SIZE} | params)


def artifact(client: TestClient, caller: Caller, job: Any, name: str) -> bytes:
    response = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}", headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.content


def test_a_trained_model_is_listed_and_shown(client: TestClient, alice: Caller, bob: Caller, model: str) -> None:
    # When alice lists her models and reads hers
    page = client.get("/v1/models", headers=alice.headers).json()
    one = client.get(f"/v1/models/{model}", headers=alice.headers).json()
    # Then it is there, described by its training job, with its card
    assert [m["id"] for m in page["items"]] == [model]
    assert page["next_cursor"] is None
    assert one == page["items"][0]
    assert (one["method"], one["styles"], one["size"], one["steps"]) == ("johnson", ["coffee"], 32, 3)
    assert (one["width"], one["residual_blocks"], one["source_job"]) == (8, 1, model)
    assert one["bytes"] > 0 and set(one["final_metrics"]) >= {"style_loss", "content_loss"}
    assert one["card"] == f"/v1/jobs/{model}/artifacts/model.json"
    assert one["preview"] == f"/v1/jobs/{model}/artifacts/preview.png"
    assert client.get(one["preview"], headers=alice.headers).status_code == 200
    # And bob has none
    assert client.get("/v1/models", headers=bob.headers).json()["items"] == []


def test_models_are_paginated_newest_first(client: TestClient, alice: Caller, worker: WorkerContext) -> None:
    # Given three models
    ids = [run(client, alice, worker, "style.train", TINY_TRAIN | {"seed": s})["id"] for s in range(3)]
    # When they are read two at a time
    first = client.get("/v1/models", params={"limit": 2}, headers=alice.headers).json()
    second = client.get("/v1/models", params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice.headers)
    # Then every model comes once, newest first
    assert [m["id"] for m in first["items"]] + [m["id"] for m in second.json()["items"]] == ids[::-1]
    assert second.json()["next_cursor"] is None


def test_one_picture_gives_output_png_and_the_model_is_cached(
    client: TestClient, alice: Caller, worker: WorkerContext, model: str
) -> None:
    # When alice applies her model to a built-in picture twice
    cache = _model_cache(worker)
    misses, hits = cache.misses, cache.hits
    first = apply(client, alice, worker, model=model, images=["astronaut"])
    second = apply(client, alice, worker, model=model, images=["astronaut"])
    # Then each succeeds with one PNG at the size asked for, the same both times
    for job in (first, second):
        assert job["state"] == "succeeded", job["error"]
        assert job["progress"]["step"] == job["progress"]["total"] == 1
    out = png_pixels(artifact(client, alice, first, "output.png"))
    assert max(out.shape[:2]) == SIZE
    assert np.array_equal(out, png_pixels(artifact(client, alice, second, "output.png")))
    # And the worker loaded the model once, then served it from its cache
    assert (cache.misses - misses, cache.hits - hits) == (1, 1)


def test_strength_zero_is_the_picture_and_preserve_colors_keeps_its_colours(
    client: TestClient, alice: Caller, worker: WorkerContext, model: str
) -> None:
    content = to_tensor(load_builtin_image("chelsea"), SIZE)[0].permute(1, 2, 0).numpy()
    # When the model is applied at strength 0, and at full strength keeping the colours
    plain = apply(client, alice, worker, model=model, images=["chelsea"], strength=0.0)
    kept = apply(client, alice, worker, model=model, images=["chelsea"], preserve_colors=True)
    styled = apply(client, alice, worker, model=model, images=["chelsea"])
    # Then strength 0 gives the picture back (to 8-bit rounding)
    assert np.abs(png_pixels(artifact(client, alice, plain, "output.png")) - content).max() <= 1.0 / 255 + 1e-6
    # And keeping the colours brings the chroma much closer to the picture's than the plain style does

    def chroma_error(pixels: np.ndarray) -> float:
        def uv(rgb: np.ndarray) -> np.ndarray:
            return np.stack(
                [rgb @ [-0.14714119, -0.28886916, 0.43601035], rgb @ [0.61497538, -0.51496512, -0.10001026]]
            )

        return float(np.abs(uv(pixels) - uv(content)).mean())

    kept_error = chroma_error(png_pixels(artifact(client, alice, kept, "output.png")))
    styled_error = chroma_error(png_pixels(artifact(client, alice, styled, "output.png")))
    assert kept_error < 0.02 < styled_error, (kept_error, styled_error)


def test_a_batch_gives_one_zip_named_after_the_pictures(
    client: TestClient, alice: Caller, worker: WorkerContext, model: str
) -> None:
    # Given an upload of three photos, two of them with the same stem
    files = {"trip/a.jpg": png(40, 30), "trip/b.png": png(30, 40), "trip/a.png": png(20, 20)}
    upload = client.post(
        "/v1/uploads", files=[("files", ("trip.zip", zip_of(files), "application/zip"))], headers=alice.headers
    ).json()["id"]
    # When the model is applied to the upload and a built-in
    job = apply(client, alice, worker, model=model, images=[upload, "rocket"])
    # Then one zip holds a PNG per picture, named after it (the upload's single top folder is its root), each at the
    # size asked for
    assert job["state"] == "succeeded", job["error"]
    assert job["progress"]["step"] == job["progress"]["total"] == 4
    names = {a["name"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts", headers=alice.headers).json()["items"]}
    assert names == {"outputs.zip"}
    with zipfile.ZipFile(io.BytesIO(artifact(client, alice, job, "outputs.zip"))) as archive:
        entries = {name: png_pixels(archive.read(name)) for name in archive.namelist()}
    assert set(entries) == {"a.png", "b.png", "a-2.png", "rocket.png"}
    assert all(max(pixels.shape[:2]) == SIZE for pixels in entries.values())


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"model": str(uuid.UUID(int=5))}, "params.model", "not found"),
        ({"model": "my-model"}, "params.model", "must be a model id"),
        ({"images": []}, "params.images", "at least 1 item"),
        ({"images": ["nowhere"]}, "params.images", "unknown image 'nowhere'"),
        ({"size": 100_000}, "params.size", "over this server's limit"),
        ({"strength": 1.5}, "params.strength", "less than or equal to 1"),
        ({"contrast": 0.5}, "params.contrast", "Extra inputs are not permitted"),
        # options of the other method: a johnson model has its style trained in
        ({"alpha": 0.5}, "params.alpha", "alpha applies to adain models; model "),
        ({"styles": ["coffee"]}, "params.styles", "styles applies to adain models"),
        ({"style_blend": [1.0]}, "params", "style_blend weighs styles; give styles too"),
        ({"alpha": 2.0}, "params.alpha", "less than or equal to 1"),
    ],
)
def test_bad_apply_submissions_get_4xx_naming_the_field(
    client: TestClient, alice: Caller, model: str, params: dict[str, Any], field: str, needle: str
) -> None:
    body = {"type": "style.apply", "params": {"model": model, "images": ["astronaut"]} | params}
    response = client.post("/v1/jobs", json=body, headers=alice.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert needle in error["message"], error


def test_a_job_that_is_no_model_gets_422(client: TestClient, alice: Caller, worker: WorkerContext) -> None:
    # Given a gan.train job and a style.train job that has not run
    gan = client.post("/v1/jobs", json={"type": "gan.train", "params": {"dataset": "digits"}}, headers=alice.headers)
    queued = client.post("/v1/jobs", json={"type": "style.train", "params": TINY_TRAIN}, headers=alice.headers)
    # When either is given as the model, the answer is a 422 that says why
    for job, needle in ((gan.json()["id"], "is a gan.train job, not style.train"), (queued.json()["id"], "is queued")):
        body = {"type": "style.apply", "params": {"model": job, "images": ["astronaut"]}}
        response = client.post("/v1/jobs", json=body, headers=alice.headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == "params.model"
        assert needle in response.json()["error"]["message"]


def test_deleting_a_model_removes_its_file_and_card(
    client: TestClient,
    alice: Caller,
    worker: WorkerContext,
    model: str,
    store: S3ObjectStore,
    sessions: sessionmaker[Session],
) -> None:
    # Given an apply job queued before the model is deleted
    queued = client.post(
        "/v1/jobs",
        json={"type": "style.apply", "params": {"model": model, "images": ["astronaut"]}},
        headers=alice.headers,
    ).json()["id"]
    with transaction(sessions) as session:
        keys = [
            queries.get_artifact(session, job_id=uuid.UUID(model), name=n).key
            for n in ("model.safetensors", "model.json")
        ]
    assert all(store.exists(k) for k in keys)
    # When alice deletes the model, twice
    first = client.delete(f"/v1/models/{model}", headers=alice.headers)
    second = client.delete(f"/v1/models/{model}", headers=alice.headers)
    # Then both are 204, the model is gone from the API and its objects from the bucket
    assert (first.status_code, second.status_code) == (204, 204)
    assert client.get(f"/v1/models/{model}", headers=alice.headers).status_code == 404
    assert client.get("/v1/models", headers=alice.headers).json()["items"] == []
    assert not any(store.exists(k) for k in keys)
    # And the training job, its history and preview stay
    assert client.get(f"/v1/jobs/{model}", headers=alice.headers).json()["state"] == "succeeded"
    assert client.get(f"/v1/jobs/{model}/artifacts/preview.png", headers=alice.headers).status_code == 200
    # And a new apply is refused, while the one queued before fails naming the deleted model
    body = {"type": "style.apply", "params": {"model": model, "images": ["astronaut"]}}
    refused = client.post("/v1/jobs", json=body, headers=alice.headers)
    assert refused.status_code == 422 and "no longer has its model.safetensors" in refused.json()["error"]["message"]
    run_job(worker, uuid.UUID(queued), execute, exact=True)
    failed = client.get(f"/v1/jobs/{queued}", headers=alice.headers).json()
    assert failed["state"] == "failed"
    assert failed["error"]["code"] == "missing_input" and "deleted" in failed["error"]["message"]


def test_a_corrupt_model_file_fails_the_job_without_unpickling(
    client: TestClient,
    alice: Caller,
    worker: WorkerContext,
    model: str,
    store: S3ObjectStore,
    sessions: sessionmaker[Session],
    tmp_path: Any,
) -> None:
    # Given the model's object replaced by a torch.save pickle that would write a file if it were unpickled
    marker = tmp_path / "unpickled"

    class Bomb:
        def __reduce__(self) -> tuple[Any, ...]:
            return (open, (str(marker), "w"))

    buffer = io.BytesIO()
    torch.save({"weights": Bomb()}, buffer)
    with transaction(sessions) as session:
        artifact_row = queries.get_artifact(session, job_id=uuid.UUID(model), name="model.safetensors")
        key = artifact_row.key
    store.put(key, buffer.getvalue())
    # When it is applied
    job = apply(client, alice, worker, model=model, images=["astronaut"])
    # Then the job fails with a named error, and nothing was unpickled
    assert job["state"] == "failed"
    assert job["error"]["code"] == "bad_model", job["error"]
    assert "not a style model" in job["error"]["message"]
    assert not marker.exists()


@pytest.fixture
def adain_model(client: TestClient, alice: Caller, worker: WorkerContext) -> str:
    """The id of an AdaIN model alice trained (a tiny style.train run)."""
    job = run(client, alice, worker, "style.train", TINY_ADAIN)
    assert job["state"] == "succeeded", job["error"]
    return str(job["id"])


def test_an_adain_model_applies_any_styles_with_alpha_and_blend(
    client: TestClient, alice: Caller, worker: WorkerContext, adain_model: str
) -> None:
    # Given alice's adain model, listed as such
    listed = client.get(f"/v1/models/{adain_model}", headers=alice.headers).json()
    assert (listed["method"], listed["styles"]) == ("adain", ["coffee", "rocket"])
    # When it is applied with a style it never saw, at alpha 0 and 1, and with two styles blended
    none = apply(client, alice, worker, model=adain_model, images=["astronaut"], styles=["chelsea"], alpha=0.0)
    full = apply(client, alice, worker, model=adain_model, images=["astronaut"], styles=["chelsea"], alpha=1.0)
    blended = apply(
        client, alice, worker, model=adain_model, images=["astronaut"], styles=["chelsea", "coffee"], style_blend=[1, 3]
    )
    # Then each gives one PNG at the size asked for, and alpha and the blend change the output
    outputs = []
    for job in (none, full, blended):
        assert job["state"] == "succeeded", job["error"]
        outputs.append(png_pixels(artifact(client, alice, job, "output.png")))
        assert max(outputs[-1].shape[:2]) == SIZE
    assert np.abs(outputs[0] - outputs[1]).mean() > 1e-3
    assert np.abs(outputs[1] - outputs[2]).mean() > 1e-3


def test_an_adain_model_needs_style_pictures_and_a_johnson_model_refuses_them(
    client: TestClient, alice: Caller, adain_model: str, model: str
) -> None:
    cases = (
        ({"model": adain_model, "images": ["astronaut"]}, "params.styles", "is an adain model: give the style"),
        ({"model": model, "images": ["astronaut"], "alpha": 0.5}, "params.alpha", "is a johnson model"),
    )
    for params, field, needle in cases:
        response = client.post("/v1/jobs", json={"type": "style.apply", "params": params}, headers=alice.headers)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == field and needle in error["message"], error


def test_an_adain_style_set_upload_trains_on_every_picture(
    client: TestClient, alice: Caller, worker: WorkerContext
) -> None:
    # Given a style set uploaded as a zip of three pictures, one of them not an image the decoder can use
    files = {"styles/a.png": png(40, 40, (250, 10, 10)), "styles/b.png": png(40, 40, (10, 250, 10))}
    files["styles/c.png"] = png(40, 40, (10, 10, 250))
    upload = client.post(
        "/v1/uploads", files=[("files", ("styles.zip", zip_of(files), "application/zip"))], headers=alice.headers
    ).json()["id"]
    # When an adain model is trained on it
    job = run(client, alice, worker, "style.train", TINY_ADAIN | {"styles": [upload]})
    # Then it succeeded, and its card names the set
    assert job["state"] == "succeeded", job["error"]
    card = client.get(f"/v1/jobs/{job['id']}/artifacts/model.json", headers=alice.headers).json()
    assert card["method"] == "adain" and card["styles"] == [upload]
