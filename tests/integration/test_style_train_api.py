"""style.train submissions against the real API: every bad input is a 4xx naming the field before anything
is stored or queued; defaults are stored resolved; the memory and artifact estimates refuse what can't run.

Each test reads Given / When / Then."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.config import Settings
from tests.conftest import Caller
from tests.support.images import png, zip_of

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {"styles": ["coffee"], "size": 64, "steps": 20, "weights": "random"}
MISSING_UPLOAD = str(uuid.UUID(int=9))


def train(**params: Any) -> dict[str, Any]:
    """A style.train body: the small base params with ``params`` on top (None removes a key)."""
    return {"type": "style.train", "params": {k: v for k, v in (BASE | params).items() if v is not None}}


def submit(client: TestClient, caller: Caller, body: dict[str, Any]) -> Any:
    """POST /v1/jobs as ``caller``."""
    return client.post("/v1/jobs", json=body, headers=caller.headers)


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        ({"styles": None}, "params.styles", "Field required"),
        ({"styles": []}, "params.styles", "at least 1 item"),
        ({"styles": ["no-such-picture"]}, "params.styles", "unknown image 'no-such-picture'"),
        ({"styles": ["coffee", MISSING_UPLOAD]}, "params.styles.1", f"upload {MISSING_UPLOAD} not found"),
        ({"style_blend": [1.0, 2.0]}, "params", "style_blend has 2 weights but styles has 1"),
        ({"method": "cyclegan"}, "params.method", "'johnson' or 'adain'"),
        # adain's decoder inverts relu4_1: its content loss is there and its style loss not deeper
        ({"method": "adain", "content_layers": ["relu2_2"]}, "params.content_layers", "adain's content loss is at"),
        ({"method": "adain", "style_layers": ["relu5_1"]}, "params.style_layers", "['relu5_1'] are deeper"),
        ({"method": "adain", "style_blend": [1.0]}, "params.style_blend", "blend styles in style.apply"),
        ({"content": "imagenet"}, "params.content", "unknown content set 'imagenet'"),
        ({"content": MISSING_UPLOAD}, "params.content", f"upload {MISSING_UPLOAD} not found"),
        ({"size": 16}, "params.size", "greater than or equal to 32"),
        ({"size": 100_000}, "params.size", "over this server's limit"),
        ({"style_size": 100_000}, "params.style_size", "over this server's limit"),
        ({"style_size": 16}, "params.style_size", "greater than or equal to 32"),
        ({"method": "adain", "style_size": 256}, "params.style_size", "adain sees style pictures at size"),
        ({"batch_size": 0}, "params.batch_size", "greater than or equal to 1"),
        ({"batch_size": 65}, "params.batch_size", "less than or equal to 64"),
        ({"width": 4}, "params.width", "greater than or equal to 8"),
        ({"residual_blocks": 11}, "params.residual_blocks", "less than or equal to 10"),
        ({"network": "vgg11"}, "params.network", "'vgg16' or 'vgg19'"),
        ({"style_layers": ["relu9_9"]}, "params.style_layers", "unknown vgg16 layer(s) ['relu9_9']"),
        ({"weights": "vgg-face"}, "params.weights", "unknown weights 'vgg-face'"),
        ({"steps": 10_000, "preview_every": 1}, "params.preview_every", "would save 10000 previews"),
        ({"lr": 0}, "params.lr", "greater than 0"),
        ({"size": "64"}, "params.size", "valid integer"),
    ],
)
def test_bad_style_train_submissions_get_4xx_naming_the_field(
    client: TestClient, alice: Caller, params: dict[str, Any], field: str, needle: str
) -> None:
    # When a style.train job with one bad option is submitted
    response = submit(client, alice, train(**params))
    # Then it is a 422 that names the field and the problem, and nothing was stored
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert needle in error["message"], error
    assert client.get("/v1/jobs", headers=alice.headers).json()["items"] == []


def test_defaults_are_johnsons_and_are_stored_resolved(client: TestClient, alice: Caller) -> None:
    # When only the style is given
    response = submit(client, alice, {"type": "style.train", "params": {"styles": ["coffee"]}})
    # Then the job stores Johnson's network and layers, the built-in content set and the default budget
    assert response.status_code == 201, response.text
    job = response.json()
    params = job["params"]
    assert (params["method"], params["content"], params["network"]) == ("johnson", "builtin", "vgg16")
    assert params["content_layers"] == ["relu2_2"]
    assert params["style_layers"] == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    assert (params["size"], params["steps"], params["width"], params["residual_blocks"]) == (128, 1000, 32, 5)
    assert job["progress"]["total"] == 1000


def test_adain_fills_in_the_papers_network_layers_and_weights(client: TestClient, alice: Caller) -> None:
    # When an adain job gives only its style set and one override
    body = {"type": "style.train", "params": {"method": "adain", "styles": ["coffee", "rocket"], "style_weight": 5.0}}
    response = submit(client, alice, body)
    # Then it stores VGG19 up to relu4_1, the style layers relu1_1 ... relu4_1, and the override
    assert response.status_code == 201, response.text
    params = response.json()["params"]
    assert (params["method"], params["network"], params["content_layers"]) == ("adain", "vgg19", ["relu4_1"])
    assert params["style_layers"] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1"]
    assert (params["content_weight"], params["style_weight"]) == (1.0, 5.0)


def test_an_uploaded_folder_of_photos_is_a_content_set(client: TestClient, alice: Caller) -> None:
    # Given an image upload of three photos
    files = {f"photos/p{i}.png": png(48 + i, 40) for i in range(3)}
    upload = client.post(
        "/v1/uploads", files=[("files", ("photos.zip", zip_of(files), "application/zip"))], headers=alice.headers
    )
    assert upload.status_code == 201, upload.text
    # When it is the content of a style.train job
    response = submit(client, alice, train(content=upload.json()["id"]))
    # Then the job is accepted with that content set
    assert response.status_code == 201, response.text
    assert response.json()["params"]["content"] == upload.json()["id"]


def test_a_batch_over_the_workers_device_memory_gets_422_naming_batch_size(settings: Settings, alice: Caller) -> None:
    # Given style workers with 2 GiB of device memory
    small = settings.model_copy(update={"style_device_memory_bytes": 2 * 1024**3})
    with TestClient(create_app(small)) as app:
        # When a 128 px batch of 4 (about 1 GiB) and a 512 px batch of 16 (about 41 GiB) are submitted
        fits = submit(app, alice, train(size=128, batch_size=4))
        over = submit(app, alice, train(size=512, batch_size=16))
    # Then the first is accepted and the second refused, naming batch_size, the estimate and the limit
    assert fits.status_code == 201, fits.text
    assert over.status_code == 422, over.text
    error = over.json()["error"]
    assert error["field"] == "params.batch_size"
    assert "needs about 40.6 GiB of device memory (estimate), over the 2.0 GiB" in error["message"], error
