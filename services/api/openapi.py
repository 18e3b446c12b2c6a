"""The OpenAPI document with every job type's params schema, for clients that validate before they submit.

``JobCreate.params`` is a free object in the request schema: its shape depends on ``type``, and submit
validates it with the job type's params class (shared/jobs/specs.py). The document adds each class's
JSON schema under ``components.schemas`` (its name is the class name; nested models' ``$defs`` join it)
and maps each type to its schema in a top-level extension::

    "x-atelier-job-types": {"gan.train": {"$ref": "#/components/schemas/GanTrainParams"}, ...}

The schemas are pydantic's own, in validation mode: bounds, enums (presets included) and the built-in
names a form may offer (``x-builtins``) are those submit applies. The document is built once, on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from shared.jobs.specs import JOB_TYPES, JobSpec

JOB_TYPES_KEY = "x-atelier-job-types"
COMPONENT_REF = "#/components/schemas/{model}"


def job_type_schemas(specs: Mapping[str, JobSpec]) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    """(component schemas by name, a ``$ref`` per job type) for the params classes of ``specs``."""
    schemas: dict[str, Any] = {}
    refs: dict[str, dict[str, str]] = {}
    for name, spec in specs.items():
        schema = spec.params.model_json_schema(ref_template=COMPONENT_REF, mode="validation")
        model = spec.params.__name__
        for def_name, definition in {**schema.pop("$defs", {}), model: schema}.items():
            _add(schemas, def_name, definition)
        refs[name] = {"$ref": COMPONENT_REF.format(model=model)}
    return schemas, refs


def with_job_types(document: dict[str, Any], specs: Mapping[str, JobSpec] = JOB_TYPES) -> dict[str, Any]:
    """``document`` with the params schema of each job type in ``specs`` and the extension naming them."""
    schemas, refs = job_type_schemas(specs)
    components = dict(document.get("components", {}))
    merged = dict(components.get("schemas", {}))
    for name, schema in schemas.items():
        _add(merged, name, schema)
    return {**document, "components": {**components, "schemas": merged}, JOB_TYPES_KEY: refs}


def install(app: FastAPI) -> None:
    """Make ``app.openapi`` (and so /openapi.json and /docs) build the document with the job types, once."""
    build = app.openapi  # FastAPI's own, which caches its result on app.openapi_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None or JOB_TYPES_KEY not in app.openapi_schema:
            app.openapi_schema = with_job_types(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add(schemas: dict[str, Any], name: str, schema: Any) -> None:
    """Put ``schema`` under ``name``; two different schemas under one name are a bug, not a silent overwrite."""
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different OpenAPI component schemas are named {name!r}")
    schemas[name] = schema
