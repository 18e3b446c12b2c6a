"""/openapi.json carries each job type's params schema (x-atelier-job-types), with the server's bounds, the
preset enums and the built-in names a form offers, and it is still a valid OpenAPI document.

Each test reads Given / When / Then."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from services.api import openapi
from services.api.app import create_app
from shared.config import Settings
from shared.jobs.gan_train import GAN_PRESETS
from shared.jobs.params import BUILTIN_DATASETS, BUILTIN_IMAGES, MAX_STEPS, TORCHVISION_DATASETS
from shared.jobs.specs import JOB_TYPES
from shared.jobs.style_transfer import MAX_STYLE_STEPS, STYLE_PRESETS

REF_PREFIX = "#/components/schemas/"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as a client downloads it (no lifespan: building it connects to nothing)."""
    return TestClient(create_app(Settings())).get("/openapi.json").json()


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith(REF_PREFIX), ref
    return document["components"]["schemas"][ref.removeprefix(REF_PREFIX)]


def refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` anywhere under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def params_schema(document: dict[str, Any], job_type: str) -> dict[str, Any]:
    return resolve(document, document["x-atelier-job-types"][job_type]["$ref"])


def validator(document: dict[str, Any], job_type: str) -> jsonschema.Draft202012Validator:
    """A JSON Schema validator of one type's params, resolving refs inside the document as a browser would."""
    root = {"$ref": document["x-atelier-job-types"][job_type]["$ref"], "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def test_every_job_type_maps_to_a_params_schema(document: dict[str, Any]) -> None:
    # Then each registered type, and nothing else, is in the extension, resolving to its class's schema
    assert set(document["x-atelier-job-types"]) == set(JOB_TYPES)
    for name, spec in JOB_TYPES.items():
        schema = params_schema(document, name)
        assert schema["type"] == "object" and schema["additionalProperties"] is False, name
        assert set(schema["properties"]) == set(spec.params.model_fields), name
    # And the API's own schemas are all still there
    assert {"JobCreate", "JobOut", "MetricsOut", "ErrorOut"} <= set(document["components"]["schemas"])


def test_the_schemas_carry_the_server_limits_presets_and_builtins(document: dict[str, Any]) -> None:
    gan = params_schema(document, "gan.train")["properties"]
    style = params_schema(document, "style.transfer")["properties"]
    # Then the bounds are the server's
    assert gan["steps"]["maximum"] == MAX_STEPS
    assert style["steps"]["maximum"] == MAX_STYLE_STEPS
    # And the presets are enums a form can list
    for props, presets in ((gan, GAN_PRESETS), (style, STYLE_PRESETS)):
        (enum,) = [option["enum"] for option in props["preset"]["anyOf"] if "enum" in option]
        assert enum == list(presets)
    # And the built-in names are offered without restricting the field (an upload id stays valid)
    assert "digits" in gan["dataset"]["x-builtins"]
    assert gan["dataset"]["x-builtins"] == list(BUILTIN_DATASETS)
    assert gan["dataset"]["x-torchvision"] == list(TORCHVISION_DATASETS)
    assert style["content"]["x-builtins"] == list(BUILTIN_IMAGES)
    assert style["styles"]["items"]["x-builtins"] == list(BUILTIN_IMAGES)
    assert "enum" not in gan["dataset"] and "enum" not in style["content"]


def test_the_registry_examples_validate_and_out_of_bounds_params_do_not(document: dict[str, Any]) -> None:
    # Given each type's example, as the dashboard would check it before submitting
    for name, spec in JOB_TYPES.items():
        check = validator(document, name)
        jsonschema.Draft202012Validator.check_schema(check.schema)
        # Then the example passes, as it does on the server
        assert list(check.iter_errors(spec.example)) == [], name
        assert list(check.iter_errors({**spec.example, "no_such_field": 1})), name
    # And what the server refuses by its bounds or types, the schema refuses too
    gan = validator(document, "gan.train")
    assert list(gan.iter_errors({"steps": MAX_STEPS + 1}))
    assert list(gan.iter_errors({"preset": "fancy"}))
    assert list(gan.iter_errors({"steps": "10"}))
    assert list(validator(document, "style.transfer").iter_errors({"content": "astronaut", "styles": []}))


def test_the_document_is_valid_and_every_ref_resolves(document: dict[str, Any]) -> None:
    validate(copy.deepcopy(document))
    for ref in set(refs(document)):
        assert resolve(document, ref), ref


def test_the_document_is_built_once() -> None:
    app = create_app(Settings())
    assert app.openapi() is app.openapi()
    assert openapi.JOB_TYPES_KEY in app.openapi()


def test_a_name_clash_is_refused_and_a_repeat_is_not() -> None:
    # Given a document that already has a different schema under a params class's name
    clashing = {"openapi": "3.1.0", "components": {"schemas": {"GanTrainParams": {"type": "string"}}}}
    # Then merging the job types refuses it rather than overwrite either
    with pytest.raises(ValueError, match="GanTrainParams"):
        openapi.with_job_types(clashing)
    # And merging twice is the same as once
    once = openapi.with_job_types({"openapi": "3.1.0", "paths": {}})
    assert openapi.with_job_types(once) == once
