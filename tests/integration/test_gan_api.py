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
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert needle in error["message"], error
