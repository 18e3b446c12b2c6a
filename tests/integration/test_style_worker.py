"""style.transfer on the real API, Postgres and S3 server, with the worker runtime run in this
process: an uploaded VGG state_dict as the weights, and the device-memory check.

A weights upload is one ``.pt``/``.pth`` file in torch.save's zip format; the API checks its
container (it has no torch) and the worker reads it with ``torch.load(weights_only=True)``.
Each test reads Given / When / Then."""

from __future__ import annotations

import io
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
from shared.storage import S3ObjectStore
from tests.conftest import Caller
from tests.support.images import png, zip_of

torch = pytest.importorskip("torch")

from workers.engines import execute  # noqa: E402 - needs torch
from workers.runtime import WorkerContext, run_job  # noqa: E402
from workers.style.vgg import build_vgg  # noqa: E402

pytestmark = pytest.mark.integration

LAYERS = ["relu1_1", "relu2_1"]  # conv1_1, conv1_2, conv2_1: features 0, 2, 5 (0.45 MB)
STYLE: dict[str, Any] = {
    "content": "astronaut",
    "styles": ["coffee"],
    "size": 40,
    "steps": 6,
    "content_layers": ["relu2_1"],
    "style_layers": ["relu1_1", "relu2_1"],
    "seed": 7,
}


def vgg_state(seed: int, *, features_only: bool) -> dict[str, torch.Tensor]:
    """The convolutions of a seeded random VGG19 up to relu2_1, keyed as torchvision's (or its features')."""
    encoder = build_vgg("vgg19", "random", seed=seed, layers=LAYERS)
    state: dict[str, torch.Tensor] = {}
    names = list(dict(encoder.body.named_children()))
    for name, module in encoder.body.named_children():
        if isinstance(module, torch.nn.Conv2d):
            prefix = "" if features_only else "features."
            index = names.index(name)
            state[f"{prefix}{index}.weight"] = module.weight.detach().clone()
            state[f"{prefix}{index}.bias"] = module.bias.detach().clone()
    return state


def saved(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def stored(store: S3ObjectStore, caller: Caller) -> set[str]:
    """Keys under the caller's uploads prefix in the S3 bucket."""
    prefix = f"uploads/{caller.tenant_id}/"
    return {o.object_name or "" for o in store.client.list_objects(store.bucket, prefix=prefix, recursive=True)}


def upload(client: TestClient, caller: Caller, name: str, data: bytes) -> Any:
    return client.post(
        "/v1/uploads", files=[("files", (name, data, "application/octet-stream"))], headers=caller.headers
    )


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[WorkerContext]:
    """The worker runtime in this process, on the real Postgres and S3 server."""
    yield WorkerContext.build(settings.model_copy(update={"worker_name": "style-test"}))


def run_style(
    client: TestClient, caller: Caller, sessions: sessionmaker[Session], worker: WorkerContext, params: dict[str, Any]
) -> Job:
    created = client.post("/v1/jobs", json={"type": "style.transfer", "params": params}, headers=caller.headers)
    assert created.status_code == 201, created.text
    job_id = uuid.UUID(created.json()["id"])
    run_job(worker, job_id, execute, exact=True)
    with transaction(sessions) as session:
        job = queries.get_job(session, tenant_id=caller.tenant_id, job_id=job_id)
        session.expunge(job)
        return job


def output_png(client: TestClient, caller: Caller, job: Job) -> bytes:
    response = client.get(f"/v1/jobs/{job.id}/artifacts/output.png", headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.content


def test_a_weights_upload_is_recorded_as_weights(client: TestClient, alice: Caller) -> None:
    # When alice uploads a torch.save'd state_dict
    data = saved(vgg_state(1, features_only=False))
    response = upload(client, alice, "my-vgg19.pth", data)
    # Then it is a weights upload holding that one file
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["kind"], body["filename"], body["file_count"], body["classes"]) == ("weights", "my-vgg19.pth", 1, [])
    assert body["files"] == [{"path": "my-vgg19.pth", "width": 0, "height": 0, "bytes": len(data)}]
    # And an image upload says it holds images
    images = client.post("/v1/uploads", files=[("files", ("a.png", png(), "image/png"))], headers=alice.headers)
    assert images.json()["kind"] == "images"


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("legacy.pt", b"\x80\x02}q\x00.", "not a torch.save zip file"),
        ("page.pth", b"<html><script>alert(1)</script></html>", "not a torch.save zip file"),
        ("images.pt", zip_of({"a.png": png()}), "not torch.save's layout"),
        ("broken.pt", b"PK\x03\x04" + b"\x00" * 64, "not a readable torch.save zip file"),
    ],
    ids=["legacy-pickle", "html", "zip-of-images", "truncated-zip"],
)
def test_files_that_are_not_torch_save_zips_get_415(
    client: TestClient, alice: Caller, store: S3ObjectStore, name: str, data: bytes, needle: str
) -> None:
    # When alice uploads something named .pt/.pth that is not torch.save's zip format
    before = stored(store, alice)
    response = upload(client, alice, name, data)
    # Then it is a 415 that names the file and says how to save it, and nothing was stored
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["field"] == "files" and needle in error["message"] and name in error["message"]
    assert stored(store, alice) == before


def test_uploads_of_the_wrong_kind_get_422_naming_the_field(client: TestClient, alice: Caller, bob: Caller) -> None:
    weights = upload(client, alice, "w.pth", saved(vgg_state(1, features_only=True))).json()["id"]
    images = client.post("/v1/uploads", files=[("files", ("a.png", png(), "image/png"))], headers=alice.headers)
    image_id = images.json()["id"]
    cases = [
        ({"weights": image_id}, "params.weights", "holds images; this field needs a weights file"),
        ({"content": weights}, "params.content", "holds a weights file; this field needs images"),
        ({"styles": ["coffee", weights]}, "params.styles.1", "holds a weights file"),
    ]
    for params, field, needle in cases:
        response = client.post(
            "/v1/jobs", json={"type": "style.transfer", "params": STYLE | params}, headers=alice.headers
        )
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["field"] == field
        assert needle in response.json()["error"]["message"]
    # And another tenant's weights upload does not exist for bob
    response = client.post(
        "/v1/jobs", json={"type": "style.transfer", "params": STYLE | {"weights": weights}}, headers=bob.headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "params.weights"
    assert f"upload {weights} not found" in response.json()["error"]["message"]


@pytest.mark.parametrize("features_only", [False, True], ids=["torchvision-keys", "features-keys"])
def test_uploaded_weights_are_the_encoder(
    client: TestClient,
    alice: Caller,
    sessions: sessionmaker[Session],
    worker: WorkerContext,
    features_only: bool,
) -> None:
    # Given the seed-7 random VGG19 exported as a state_dict and uploaded, and another seed's
    same = upload(client, alice, "seed7.pth", saved(vgg_state(7, features_only=features_only))).json()["id"]
    other = upload(client, alice, "seed8.pth", saved(vgg_state(8, features_only=features_only))).json()["id"]
    # When the same job runs with weights=random (seed 7), with the seed-7 upload and with the seed-8 upload
    reference = run_style(client, alice, sessions, worker, STYLE | {"weights": "random"})
    uploaded = run_style(client, alice, sessions, worker, STYLE | {"weights": same})
    different = run_style(client, alice, sessions, worker, STYLE | {"weights": other})
    # Then all succeed, the seed-7 upload gives the very image weights=random gives, and seed 8 does not
    for job in (reference, uploaded, different):
        assert job.state == "succeeded", job.error_message
    assert output_png(client, alice, uploaded) == output_png(client, alice, reference)
    assert output_png(client, alice, different) != output_png(client, alice, reference)
    # And only the weights=random run carries the random-encoder warning
    assert any("weights=random" in w for w in reference.warnings)
    assert not any("weights=random" in w for w in uploaded.warnings)


def test_a_state_dict_that_does_not_fit_fails_the_job_naming_the_layer(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], worker: WorkerContext
) -> None:
    # Given a state_dict holding only the first block (conv1_1, conv1_2), and one with a wrong shape
    short = {k: v for k, v in vgg_state(1, features_only=False).items() if k.split(".")[1] in ("0", "2")}
    bad = vgg_state(1, features_only=False) | {"features.5.weight": torch.zeros(128, 3, 3, 3)}
    not_a_state = saved([torch.zeros(2)])
    expectations = [
        (saved(short), "does not fit VGG19 layer conv2_1 (features.5)"),
        (saved(bad), "does not fit VGG19 layer conv2_1 (features.5)"),
        (not_a_state, "holds a list, not a state_dict"),
    ]
    for data, needle in expectations:
        weights = upload(client, alice, "partial.pth", data).json()["id"]
        # When a job that needs relu2_1 runs with it
        job = run_style(client, alice, sessions, worker, STYLE | {"weights": weights})
        # Then it fails with the reason and the remedy, and the worker carries on
        assert (job.state, job.error_code) == ("failed", "weights_unavailable"), job.error_message
        assert needle in (job.error_message or ""), job.error_message


def test_a_job_over_the_workers_memory_fails_before_it_starts(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session], settings: Settings
) -> None:
    # Given a worker that may use at most 512 MiB, and a 512 px L-BFGS job (about 2.1 GiB)
    limited = WorkerContext.build(
        settings.model_copy(update={"worker_name": "small-device", "device_memory_limit_bytes": 512 * 1024**2})
    )
    params = STYLE | {"size": 512, "optimizer": "lbfgs", "weights": "random", "content_layers": ["relu4_2"]}
    # When the worker runs it
    job = run_style(client, alice, sessions, limited, params)
    # Then it failed at once, saying what it needs, what the worker has and what to change
    assert (job.state, job.error_code) == ("failed", "too_large"), job.error_message
    message = job.error_message or ""
    assert "params.size: 512 px needs about 2.1 GiB of cpu memory" in message, message
    assert "this worker has 512 MiB available" in message, message
    assert job.progress_step == 0
    # And a job that fits runs on the same worker
    fits = run_style(client, alice, sessions, limited, STYLE | {"weights": "random"})
    assert fits.state == "succeeded", fits.error_message
