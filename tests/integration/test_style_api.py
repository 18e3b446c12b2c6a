"""style.transfer submissions against the real API: every bad input is a 4xx naming the
problem before anything is stored or queued; good options are stored resolved.

Each test reads Given / When / Then."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.app import create_app
from shared.config import Settings
from tests.conftest import Caller

pytestmark = pytest.mark.integration

BASE: dict[str, Any] = {"content": "astronaut", "styles": ["coffee"], "size": 64, "weights": "random"}
MISSING_UPLOAD = str(uuid.UUID(int=7))
NEWLINE_ID = f"{uuid.UUID(int=7)}\n"


def style(**params: Any) -> dict[str, Any]:
    """A style.transfer body: the small base params with ``params`` on top (None removes a key)."""
    merged = {k: v for k, v in (BASE | params).items() if v is not None}
    return {"type": "style.transfer", "params": merged}


def submit(client: TestClient, caller: Caller, body: dict[str, Any]) -> Any:
    """POST /v1/jobs as ``caller``."""
    return client.post("/v1/jobs", json=body, headers=caller.headers)


@pytest.mark.parametrize(
    ("params", "field", "needle"),
    [
        # a missing style image: none given, an empty list, or an upload that doesn't exist
        ({"styles": None}, "params.styles", "Field required"),
        ({"styles": []}, "params.styles", "at least 1 item"),
        ({"styles": ["coffee", MISSING_UPLOAD]}, "params.styles.1", f"upload {MISSING_UPLOAD} not found"),
        ({"styles": ["no-such-picture"]}, "params.styles", "unknown image 'no-such-picture'"),
        # blend weights that don't match the style images
        (
            {"styles": ["coffee", "rocket"], "style_blend": [1.0]},
            "params",
            "style_blend has 1 weights but styles has 2",
        ),
        ({"style_blend": [-1.0]}, "params", "non-negative"),
        # sizes over the server's limit, directly, through the last scale or the style scale
        ({"size": 100_000}, "params.size", "over this server's limit"),
        ({"size": None, "scales": [128, 100_000]}, "params.size", "100000 px is over this server's limit"),
        ({"size": 2048, "style_scale": 2.0}, "params.style_scale", "4096 px are over this server's limit"),
        ({"scales": [128, 64]}, "params.scales", "strictly increasing"),
        ({"size": 256, "scales": [64, 128]}, "params", "scales must end at size (256 px)"),
        # unknown layer names, checked against the chosen network
        ({"style_layers": ["relu1_1", "conv9_9"]}, "params.style_layers", "unknown vgg19 layer(s) ['conv9_9']"),
        ({"content_layers": ["fc7"]}, "params.content_layers", "unknown vgg19 layer(s) ['fc7']"),
        (
            {"network": "vgg16", "style_layers": ["conv5_4"]},
            "params.style_layers",
            "unknown vgg16 layer(s) ['conv5_4']: vgg16 has conv1_1 ... conv5_3",
        ),
        ({"network": "vgg11"}, "params.network", "'vgg16' or 'vgg19'"),
        # weights: a kind that doesn't exist, or an upload that doesn't
        ({"weights": "vgg-face"}, "params.weights", "unknown weights 'vgg-face'"),
        ({"weights": MISSING_UPLOAD}, "params.weights", f"upload {MISSING_UPLOAD} not found"),
        ({"style_layer_weights": [1.0, 2.0]}, "params.style_layer_weights", "2 weights for 5 style_layers"),
        ({"pooling": "min"}, "params.pooling", "'max' or 'avg'"),
        ({"optimizer": "sgd"}, "params.optimizer", "'adam' or 'lbfgs'"),
        ({"init": "zeros"}, "params.init", "'content', 'noise' or 'style-stats'"),
        ({"preset": "picasso"}, "params.preset", "'lesson' or 'gatys'"),
        ({"snapshot_every": 0}, "params.snapshot_every", "greater than or equal to 1"),
        ({"steps": 10_000, "snapshot_every": 1}, "params.snapshot_every", "would save 10000 snapshots in 10000"),
        ({"snapshot_every": 10**18}, "params.snapshot_every", "must be at most 1000000"),
        # strict types: no string, boolean or float for an integer, no string for a boolean
        ({"size": "256"}, "params.size", "valid integer"),
        ({"steps": True}, "params.steps", "valid integer"),
        ({"preserve_colors": "yes"}, "params.preserve_colors", "valid boolean"),
        # an id with a trailing newline is not an id (it was a 500)
        ({"content": NEWLINE_ID}, "params.content", "unknown image"),
        ({"styles": ["coffee", NEWLINE_ID]}, "params.styles", "unknown image"),
        ({"weights": NEWLINE_ID}, "params.weights", "unknown weights"),
    ],
)
def test_bad_style_submissions_get_4xx_naming_the_problem(
    client: TestClient, alice: Caller, params: dict[str, Any], field: str, needle: str
) -> None:
    # When a style job with one bad option is submitted
    response = submit(client, alice, style(**params))
    # Then it is a 422 that names the field and the problem...
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    assert needle in error["message"], error
    # ...and nothing was stored, so no worker ever sees it
    assert client.get("/v1/jobs", headers=alice.headers).json()["items"] == []


def test_the_server_limit_is_the_configured_max_style_size(settings: Settings, alice: Caller) -> None:
    # Given workers with memory enough for the largest size (a 2048 px job needs about 22 GiB)
    roomy = settings.model_copy(update={"worker_device_memory_bytes": 64 * 1024**3})
    with TestClient(create_app(roomy)) as client:
        at_limit = submit(client, alice, style(size=settings.max_style_size, steps=1))
        over = submit(client, alice, style(size=settings.max_style_size + 1, steps=1))
    assert at_limit.status_code == 201, at_limit.text
    assert over.status_code == 422
    assert f"limit of {settings.max_style_size} px" in over.json()["error"]["message"]


def test_a_preset_is_stored_resolved_and_explicit_fields_win(client: TestClient, alice: Caller) -> None:
    # When a gatys-preset job overrides only the init
    response = submit(client, alice, style(preset="gatys", init="content"))
    # Then the stored params carry the preset's choices, the override, and the L-BFGS step size
    assert response.status_code == 201, response.text
    params = response.json()["params"]
    assert (params["network"], params["pooling"], params["optimizer"], params["lr"]) == ("vgg19", "avg", "lbfgs", 1.0)
    assert params["content_layers"] == ["relu4_2"]
    assert params["style_layers"] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
    assert params["init"] == "content"


def test_multi_scale_progress_counts_the_steps_of_every_scale(client: TestClient, alice: Caller) -> None:
    response = submit(client, alice, style(size=None, scales=[64, 128], steps=10))
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["params"]["size"] == 128
    assert job["progress"]["total"] == 20


def test_old_style_params_still_validate_unchanged(client: TestClient, alice: Caller) -> None:
    # Given the params a client sent before the engine had options
    old = {"content": "astronaut", "styles": ["coffee"], "size": 64, "steps": 5, "lr": 0.05}
    response = submit(client, alice, {"type": "style.transfer", "params": old})
    assert response.status_code == 201, response.text
    params = response.json()["params"]
    assert {k: params[k] for k in old} == old
    assert (params["network"], params["optimizer"], params["init"], params["scales"]) == (
        "vgg19",
        "adam",
        "content",
        None,
    )


def test_a_size_over_the_workers_device_memory_gets_422(settings: Settings, alice: Caller) -> None:
    # Given a server whose style workers have 1 GiB of device memory
    small = settings.model_copy(update={"style_device_memory_bytes": 1024**3})
    with TestClient(create_app(small)) as app:
        # When a 256 px Adam job (about 0.6 GiB) and a 1024 px one (about 5.6 GiB) are submitted
        fits = submit(app, alice, style(size=256, optimizer="adam"))
        over = submit(app, alice, style(size=1024, optimizer="adam"))
        # And an L-BFGS job at 512 px (its 100-step history: about 2.2 GiB)
        lbfgs = submit(app, alice, style(size=512, optimizer="lbfgs"))
    # Then the first is accepted and the others are refused naming the size, the need and the limit
    assert fits.status_code == 201, fits.text
    for response, need in ((over, "5.6 GiB"), (lbfgs, "2.2 GiB")):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "params.size"
        assert f"needs about {need} of device memory (estimate), over the 1.0 GiB" in error["message"], error


def test_the_issues_monsters_get_a_422_with_the_default_worker_memory(client: TestClient, alice: Caller) -> None:
    # Given the server's defaults: no ATELIER_STYLE_DEVICE_MEMORY_BYTES, so the 16 GiB worker default applies
    # When the issue's 1536 px and 2048 px L-BFGS jobs are submitted
    responses = {size: submit(client, alice, style(size=size, optimizer="lbfgs")) for size in (1536, 2048)}
    # Then both are refused naming the size, with the estimate and the limit
    for size, need in ((1536, "17.7 GiB"), (2048, "31.3 GiB")):
        response = responses[size]
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["field"] == "params.size"
        assert f"needs about {need} of device memory (estimate), over the 16.0 GiB" in error["message"], error
    # And a 1024 px L-BFGS job (about 8.0 GiB) is accepted
    assert submit(client, alice, style(size=1024, optimizer="lbfgs", steps=1)).status_code == 201
