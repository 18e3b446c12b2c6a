"""gan.train submissions against the real API: datasets with classes, class conditioning,
and what each bad combination gets. Each test reads Given / When / Then."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Caller
from tests.support.images import png, zip_of

pytestmark = pytest.mark.integration


def submit(client: TestClient, caller: Caller, **params: Any) -> Any:
    return client.post("/v1/jobs", json={"type": "gan.train", "params": params}, headers=caller.headers)


def upload(client: TestClient, caller: Caller, entries: dict[str, bytes]) -> str:
    response = client.post(
        "/v1/uploads", files=[("files", ("set.zip", zip_of(entries), "application/zip"))], headers=caller.headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_shapes_is_a_built_in_rgb_dataset(client: TestClient, alice: Caller) -> None:
    response = submit(client, alice, dataset="shapes", image_size=64, conditional=True, steps=5)
    assert response.status_code == 201, response.text
    params = response.json()["params"]
    assert (params["dataset"], params["conditional"], params["image_size"]) == ("shapes", True, 64)


def test_conditioning_on_an_upload_needs_class_folders(client: TestClient, alice: Caller) -> None:
    # Given an upload with two class folders and one with loose images
    classed = upload(client, alice, {"cats/a.png": png(color=(200, 0, 0)), "dogs/b.png": png(color=(0, 0, 200))})
    loose = upload(client, alice, {"a.png": png(), "b.png": png()})
    # When both are submitted for conditional training
    ok = submit(client, alice, dataset=classed, conditional=True, steps=5)
    refused = submit(client, alice, dataset=loose, conditional=True, steps=5)
    # Then the classed one is accepted and the loose one is a 422 naming the field and the remedy
    assert ok.status_code == 201, ok.text
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == "params.conditional"
    assert (
        f"upload {loose} has 0 classes" in error["message"] and "one sub-folder of images per class" in error["message"]
    )
    # And without conditioning the loose upload is fine
    assert submit(client, alice, dataset=loose, steps=5).status_code == 201


def assert_refused(response: Any, *, field: str, needle: str) -> dict[str, Any]:
    """A 422 naming ``field``, whose message holds ``needle``; returns the error."""
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["field"] == field, error
    assert needle in error["message"], error
    return error


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"dataset": "ring8", "conditional": True}, "params.conditional", "applies to labelled images"),
        ({"dataset": "digits", "arch": "mlp", "conditional": True}, "params.conditional", "needs arch 'dcgan'"),
        ({"dataset": "cifar100"}, "params.dataset", "unknown dataset 'cifar100'"),
        ({"dataset": "shapes", "conditional": "yes please"}, "params.conditional", "valid boolean"),
    ],
)
def test_bad_gan_datasets_and_conditioning_get_422(
    client: TestClient, alice: Caller, params: dict[str, Any], field: str, needle: str
) -> None:
    response = submit(client, alice, **params)
    assert_refused(response, field=field, needle=needle)


NEWLINE_ID = "00000000-0000-0000-0000-000000000000\n"


def test_the_issues_monster_gets_a_422_naming_the_batch_and_the_estimate(client: TestClient, alice: Caller) -> None:
    # Given the server's default worker memory (16 GiB: ATELIER_WORKER_DEVICE_MEMORY_BYTES is unset)
    # When the issue's job is submitted: widths and latent 1024, a 4096 batch, 128 px
    response = submit(
        client, alice, dataset="digits", batch_size=4096, ngf=1024, ndf=1024, nz=1024, image_size=128, steps=10
    )
    # Then it is a 422 naming the batch size, with the estimate and the limit in GiB
    error = assert_refused(
        response, field="params.batch_size", needle="needs about 1350.4 GiB of device memory (estimate;"
    )
    assert "activations at batch_size 4096), over the 16.0 GiB this server's workers have" in error["message"]
    # And with a batch of 2 the weights alone (about 89 GiB with Adam, 116 GiB in all) still name the width
    narrow = submit(client, alice, dataset="digits", batch_size=2, ngf=1024, ndf=1024, nz=1024, image_size=128)
    assert narrow.status_code == 422, narrow.text
    assert narrow.json()["error"]["field"] == "params.ngf"
    assert "116.1 GiB of weights, gradients and optimiser state" in narrow.json()["error"]["message"]
    # And nothing was stored
    assert client.get("/v1/jobs", headers=alice.headers).json()["items"] == []


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"steps": "10"}, "params.steps", "valid integer"),
        ({"batch_size": True}, "params.batch_size", "valid integer"),
        ({"spectral_norm": "yes"}, "params.spectral_norm", "valid boolean"),
        ({"sample_every": 10**18}, "params.sample_every", "must be at most 1000000"),
        ({"checkpoint_every": 10**18}, "params.checkpoint_every", "must be at most 1000000"),
        ({"steps": 1_000_000, "sample_every": 1, "checkpoint_every": 1000}, "params.sample_every", "at most 500"),
        ({"dataset": NEWLINE_ID}, "params.dataset", "unknown dataset"),
    ],
)
def test_coerced_unbounded_and_newline_values_get_422(
    client: TestClient, alice: Caller, params: dict[str, Any], field: str, needle: str
) -> None:
    # When a value that used to be coerced, accepted unbounded or (an id with a newline) crash is submitted
    response = submit(client, alice, **params)
    # Then it is a 422 naming the field, never a 201 or a 500
    assert_refused(response, field=field, needle=needle)


def test_a_preset_fills_the_budget_its_figures_were_measured_at(client: TestClient, alice: Caller) -> None:
    # When a user sends a preset and a dataset and nothing else
    ring = submit(client, alice, dataset="ring8", preset="stable")
    grid = submit(client, alice, dataset="grid25", preset="stable")
    digits = submit(client, alice, dataset="digits", preset="lesson")
    mine = submit(client, alice, dataset="grid25", preset="stable", steps=300)
    plain = submit(client, alice, dataset="ring8")
    # Then each job's stored params show the budget of docs/benchmarks.md's figures, and its progress total
    for response, (steps, batch) in ((ring, (16000, 128)), (grid, (48000, 128)), (digits, (4000, 64))):
        assert response.status_code == 201, response.text
        job = response.json()
        assert (job["params"]["steps"], job["params"]["batch_size"], job["progress"]["total"]) == (steps, batch, steps)
    # And what the caller gives wins, field by field; without a preset the plain defaults stand
    assert (mine.json()["params"]["steps"], mine.json()["params"]["batch_size"]) == (300, 128)
    assert (plain.json()["params"]["steps"], plain.json()["params"]["batch_size"]) == (2000, 64)
