"""Tenant isolation, route by route from the OpenAPI spec: tenant B cannot read, cancel,
download or sample tenant A's jobs, uploads or artifacts. The answer is 404 (never a 403
that confirms the id exists); a reference to A's resource inside a body is a 422 naming
the field, as for an id that does not exist. A route missing from ROUTE_CHECKS fails the
test, so every new route must say how it keeps tenants apart.
Each test reads Given / When / Then."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi import routing as fastapi_routing
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from shared.db import queries
from shared.db.models import Job
from shared.db.session import transaction
from shared.storage import S3ObjectStore, job_key
from tests.conftest import Caller
from tests.support.images import png

pytestmark = pytest.mark.integration

PUBLIC_ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    # Outside the OpenAPI document (include_in_schema=False), so spec_routes never lists them; the test
    # below checks this list against the app's own routes instead.
    # The dashboard: static files with no tenant data; the page asks for the key itself.
    ("GET", "/"),
    ("GET", "/ui/{path}"),
    # The Prometheus scrape: no tenant data, its own token (ATELIER_METRICS_TOKEN).
    ("GET", "/metrics"),
    # FastAPI's own: the document and its viewers.
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
}
CONVERTOR = re.compile(r"\{(\w+):\w+\}")  # {name:path} in a route's template
SECRET_BYTES = b"alice's generator weights, not for bob"
GAN = {"type": "gan.train", "params": {"dataset": "digits", "steps": 10}}
SWEEP = {
    "type": "gan.train",
    "base_params": {"dataset": "ring8", "steps": 10},
    "grid": {"lr_g": [0.0002, 0.002]},
    "objective": {"metric": "hq_share"},
}
STYLE_TRAIN = {"type": "style.train", "params": {"styles": ["coffee"], "size": 32, "steps": 2, "weights": "random"}}


@dataclass(frozen=True)
class AlicesThings:
    """Real resources of tenant A: a finished job with artifacts and metrics, a queued job, an upload."""

    done_job: str
    queued_job: str
    upload: str
    artifact: str
    owner: Caller
    model: str  # a succeeded style.train job with its model.safetensors: a style model
    sweep: str  # a sweep of two queued trials


@pytest.fixture
def things(client: TestClient, alice: Caller, sessions: sessionmaker[Session], store: S3ObjectStore) -> AlicesThings:
    """Alice's resources, written as the API and a runner would."""
    done = client.post("/v1/jobs", json=GAN, headers=alice.headers).json()["id"]
    queued = client.post("/v1/jobs", json=GAN, headers=alice.headers).json()["id"]
    upload = client.post("/v1/uploads", files=[("files", ("a.png", png()))], headers=alice.headers).json()["id"]
    key = job_key(done, "outputs", "a1/generator.pt")
    store.put(key, SECRET_BYTES)
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == uuid.UUID(done)).values(state="running", attempt=1))
        queries.record_artifact(
            session, job_id=uuid.UUID(done), attempt=1, name="generator.pt", kind="weights", key=key,
            size=len(SECRET_BYTES), sha256=hashlib.sha256(SECRET_BYTES).hexdigest(),
            content_type="application/octet-stream",
        )  # fmt: skip
        queries.upsert_metrics(session, job_id=uuid.UUID(done), attempt=1, metrics=[("g_loss", 1, 0.5)])
        session.execute(update(Job).where(Job.id == uuid.UUID(done)).values(state="succeeded"))
    model = client.post("/v1/jobs", json=STYLE_TRAIN, headers=alice.headers).json()["id"]
    model_key = job_key(model, "outputs", "a1/model.safetensors")
    store.put(model_key, SECRET_BYTES)
    with transaction(sessions) as session:
        session.execute(update(Job).where(Job.id == uuid.UUID(model)).values(state="running", attempt=1))
        queries.record_artifact(
            session, job_id=uuid.UUID(model), attempt=1, name="model.safetensors", kind="output", key=model_key,
            size=len(SECRET_BYTES), sha256=hashlib.sha256(SECRET_BYTES).hexdigest(),
            content_type="application/octet-stream",
        )  # fmt: skip
        session.execute(update(Job).where(Job.id == uuid.UUID(model)).values(state="succeeded"))
    assert client.get(f"/v1/models/{model}", headers=alice.headers).status_code == 200
    sweep = client.post("/v1/sweeps", json=SWEEP, headers=alice.headers)
    assert sweep.status_code == 201, sweep.text
    # alice herself sees all of it (and has warmed the polling cache for her key)
    assert client.get(f"/v1/jobs/{done}/artifacts/generator.pt", headers=alice.headers).content == SECRET_BYTES
    assert client.get(f"/v1/jobs/{done}", headers=alice.headers).status_code == 200
    return AlicesThings(
        done_job=done,
        queued_job=queued,
        upload=upload,
        artifact="generator.pt",
        owner=alice,
        model=model,
        sweep=sweep.json()["id"],
    )


Check = Callable[[TestClient, Caller, AlicesThings], None]


def assert_404(response) -> None:  # type: ignore[no-untyped-def]
    """Not found, and nothing of alice's in the body."""
    assert response.status_code == 404, (response.request.method, response.request.url, response.text)
    assert response.json()["error"]["code"] == "not_found"
    assert SECRET_BYTES not in response.content


def assert_422(response, field: str) -> None:  # type: ignore[no-untyped-def]
    """Refused, naming the field, as if the id did not exist."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and "not found" in error["message"], error


def check_submit(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """POST /v1/jobs: bob can't sample alice's job, train on or style with her upload."""
    for body, field in (
        ({"type": "gan.sample", "params": {"source_job": a.done_job}}, "params.source_job"),
        ({"type": "gan.train", "params": {"dataset": a.upload}}, "params.dataset"),
        ({"type": "style.transfer", "params": {"content": a.upload, "styles": ["coffee"]}}, "params.content"),
        ({"type": "style.transfer", "params": {"content": "astronaut", "styles": [a.upload]}}, "params.styles.0"),
        ({"type": "style.train", "params": {"styles": ["coffee"], "content": a.upload}}, "params.content"),
        ({"type": "style.apply", "params": {"model": a.model, "images": ["astronaut"]}}, "params.model"),
        ({"type": "style.apply", "params": {"model": a.model, "images": [a.upload]}}, "params.model"),
    ):
        assert_422(client.post("/v1/jobs", json=body, headers=bob.headers), field)


def check_list_jobs(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/jobs: none of alice's jobs, whatever the filter."""
    for params in ({}, {"state": "succeeded"}, {"state": "queued"}, {"type": "gan.train"}, {"limit": 200}):
        response = client.get("/v1/jobs", params=params, headers=bob.headers)
        assert response.status_code == 200
        assert {a.done_job, a.queued_job}.isdisjoint(j["id"] for j in response.json()["items"])


def check_list_uploads(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/uploads: none of alice's uploads."""
    response = client.get("/v1/uploads", params={"limit": 200}, headers=bob.headers)
    assert response.status_code == 200
    assert a.upload not in {u["id"] for u in response.json()["items"]}


def check_create_upload(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """POST /v1/uploads names nothing of alice's; bob's upload is his alone."""
    mine = client.post("/v1/uploads", files=[("files", ("b.png", png()))], headers=bob.headers).json()["id"]
    assert mine != a.upload
    assert client.get(f"/v1/uploads/{mine}", headers=bob.headers).status_code == 200


def by_id(method: str, path: str) -> Check:
    """Every job id alice has, in the path: 404 for bob."""

    def check(client: TestClient, bob: Caller, a: AlicesThings) -> None:
        for job in (a.done_job, a.queued_job):
            url = path.format(job_id=job, upload_id=a.upload, name=a.artifact)
            assert_404(client.request(method, url, headers=bob.headers))
            if "{name}" in path:
                assert_404(client.request(method, url, params={"redirect": "true"}, headers=bob.headers))

    return check


def upload_by_id(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/uploads/{id}: 404 for bob."""
    assert_404(client.get(f"/v1/uploads/{a.upload}", headers=bob.headers))


def usage_is_own(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/usage: bob's numbers are his (nothing), never alice's."""
    usage = client.get("/v1/usage", headers=bob.headers)
    assert usage.status_code == 200, usage.text
    assert usage.json()["stored"]["total"] == 0 and usage.json()["jobs"] == 0 and usage.json()["metric_rows"] == 0


def upload_delete_by_id(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """DELETE /v1/uploads/{id}: 404 for bob (and alice's upload stays: checked after every route ran)."""
    assert_404(client.delete(f"/v1/uploads/{a.upload}", headers=bob.headers))


def check_list_models(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/models: none of alice's models for bob; alice still sees hers."""
    response = client.get("/v1/models", params={"limit": 200}, headers=bob.headers)
    assert response.status_code == 200
    assert a.model not in {m["id"] for m in response.json()["items"]}
    assert a.model in {m["id"] for m in client.get("/v1/models", headers=a.owner.headers).json()["items"]}


def model_by_id(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET and DELETE /v1/models/{id}: 404 for bob, for her model and for her other jobs; hers stays."""
    for job in (a.model, a.done_job, a.queued_job):
        assert_404(client.get(f"/v1/models/{job}", headers=bob.headers))
        assert_404(client.delete(f"/v1/models/{job}", headers=bob.headers))
    assert client.get(f"/v1/models/{a.model}", headers=a.owner.headers).status_code == 200


def check_submit_sweep(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """POST /v1/sweeps: bob can't sweep over alice's upload, in the base params or in the grid; nothing is stored."""
    for body, field in (
        ({**SWEEP, "base_params": {"dataset": a.upload, "steps": 10}}, "params.dataset"),
        ({**SWEEP, "grid": {"dataset": ["ring8", a.upload]}}, "params.dataset"),
    ):
        assert_422(client.post("/v1/sweeps", json=body, headers=bob.headers), field)
    assert client.get("/v1/sweeps", headers=bob.headers).json()["items"] == []


def check_list_sweeps(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/sweeps: none of alice's sweeps for bob; alice still sees hers."""
    assert a.sweep not in {s["id"] for s in client.get("/v1/sweeps", headers=bob.headers).json()["items"]}
    assert a.sweep in {s["id"] for s in client.get("/v1/sweeps", headers=a.owner.headers).json()["items"]}


def sweep_by_id(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/sweeps/{id} and its cancel: 404 for bob, for her sweep and her job ids; her trials keep running."""
    for ref in (a.sweep, a.done_job, a.queued_job):
        assert_404(client.get(f"/v1/sweeps/{ref}", headers=bob.headers))
        assert_404(client.post(f"/v1/sweeps/{ref}/cancel", headers=bob.headers))
    assert client.get(f"/v1/sweeps/{a.sweep}", headers=a.owner.headers).json()["counts"] == {"queued": 2}


def check_webhook_secret(client: TestClient, bob: Caller, a: AlicesThings) -> None:
    """GET /v1/webhooks/secret and its rotation: each tenant has its own; bob rotating his leaves alice's."""
    alices = client.get("/v1/webhooks/secret", headers=a.owner.headers).json()["secret"]
    bobs = client.get("/v1/webhooks/secret", headers=bob.headers).json()["secret"]
    rotated = client.post("/v1/webhooks/secret/rotate", headers=bob.headers).json()["secret"]
    assert len({alices, bobs, rotated}) == 3
    assert client.get("/v1/webhooks/secret", headers=a.owner.headers).json()["secret"] == alices


ROUTE_CHECKS: dict[tuple[str, str], Check] = {
    ("POST", "/v1/jobs"): check_submit,
    ("GET", "/v1/jobs"): check_list_jobs,
    ("GET", "/v1/jobs/{job_id}"): by_id("GET", "/v1/jobs/{job_id}"),
    ("POST", "/v1/jobs/{job_id}/cancel"): by_id("POST", "/v1/jobs/{job_id}/cancel"),
    ("DELETE", "/v1/jobs/{job_id}"): by_id("DELETE", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/metrics"): by_id("GET", "/v1/jobs/{job_id}/metrics"),
    ("GET", "/v1/jobs/{job_id}/artifacts"): by_id("GET", "/v1/jobs/{job_id}/artifacts"),
    ("GET", "/v1/jobs/{job_id}/artifacts/{name}"): by_id("GET", "/v1/jobs/{job_id}/artifacts/{name}"),
    ("GET", "/v1/jobs/{job_id}/events"): by_id("GET", "/v1/jobs/{job_id}/events"),
    ("GET", "/v1/jobs/{job_id}/webhooks"): by_id("GET", "/v1/jobs/{job_id}/webhooks"),
    ("GET", "/v1/webhooks/secret"): check_webhook_secret,
    ("POST", "/v1/webhooks/secret/rotate"): check_webhook_secret,
    ("POST", "/v1/uploads"): check_create_upload,
    ("GET", "/v1/uploads"): check_list_uploads,
    ("GET", "/v1/uploads/{upload_id}"): upload_by_id,
    ("DELETE", "/v1/uploads/{upload_id}"): upload_delete_by_id,
    ("GET", "/v1/usage"): usage_is_own,
    ("GET", "/v1/models"): check_list_models,
    ("GET", "/v1/models/{model_id}"): model_by_id,
    ("DELETE", "/v1/models/{model_id}"): model_by_id,
    ("POST", "/v1/sweeps"): check_submit_sweep,
    ("GET", "/v1/sweeps"): check_list_sweeps,
    ("GET", "/v1/sweeps/{sweep_id}"): sweep_by_id,
    ("POST", "/v1/sweeps/{sweep_id}/cancel"): sweep_by_id,
}


def spec_routes(client: TestClient) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in /openapi.json."""
    spec = client.get("/openapi.json").json()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


def served_routes(client: TestClient) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route the app serves, those outside /openapi.json included."""
    routes = list(client.app.routes)  # type: ignore[attr-defined]
    # FastAPI >= 0.120 keeps an included router as one entry; iter_route_contexts flattens them.
    flatten = getattr(fastapi_routing, "iter_route_contexts", None)
    flat = flatten(routes) if flatten is not None else routes
    # HEAD is GET without a body: a route's HEAD is checked with its GET. Templates are written as the
    # spec writes them: {name}, without a convertor such as :path.
    return {
        (method, CONVERTOR.sub(r"{\1}", route.path))
        for route in flat
        for method in (getattr(route, "methods", None) or ())
        if method != "HEAD"
    }


def test_every_route_outside_the_spec_is_public(client: TestClient) -> None:
    # Given the routes the app serves but does not publish, Then each is listed as public here
    unpublished = served_routes(client) - spec_routes(client)
    assert unpublished <= PUBLIC_ROUTES, "a route outside the OpenAPI document that is not known to be public"
    assert {("GET", "/"), ("GET", "/ui/{path}")} <= unpublished
    # And the dashboard's routes answer without a key
    assert client.get("/").status_code == 200
    assert client.get("/ui/index.html").status_code == 200


def test_every_route_is_checked_or_public(client: TestClient) -> None:
    # Given the routes the API publishes, Then each is public or has an isolation check here
    routes = spec_routes(client)
    assert routes - PUBLIC_ROUTES == set(ROUTE_CHECKS), "a route without an isolation check (or a stale check)"


def test_every_authenticated_route_needs_a_key(client: TestClient) -> None:
    # Given the spec, Then every non-public operation declares the bearer scheme
    spec = client.get("/openapi.json").json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if (method.upper(), path) not in PUBLIC_ROUTES:
                assert op.get("security"), (method, path)


def test_bob_cannot_touch_alices_things(
    client: TestClient, alice: Caller, bob: Caller, things: AlicesThings, store: S3ObjectStore
) -> None:
    # When bob tries every route on alice's ids
    for route in sorted(spec_routes(client) - PUBLIC_ROUTES):
        ROUTE_CHECKS[route](client, bob, things)
    # Then alice's things are as they were: nothing cancelled, nothing gone
    assert client.get(f"/v1/jobs/{things.queued_job}", headers=alice.headers).json()["state"] == "queued"
    done = client.get(f"/v1/jobs/{things.done_job}", headers=alice.headers).json()
    assert done["state"] == "succeeded" and done["cancel_requested"] is False
    assert (
        client.get(f"/v1/jobs/{things.done_job}/artifacts/generator.pt", headers=alice.headers).content == SECRET_BYTES
    )
    assert client.get(f"/v1/uploads/{things.upload}", headers=alice.headers).status_code == 200
    # and bob made no job at all from alice's references
    assert client.get("/v1/jobs", headers=bob.headers).json()["items"] == []


def test_ids_that_exist_and_ids_that_dont_look_the_same(client: TestClient, bob: Caller, things: AlicesThings) -> None:
    # When bob asks for alice's job and for a random id
    missing = str(uuid.uuid4())
    theirs = client.get(f"/v1/jobs/{things.done_job}/metrics", headers=bob.headers)
    nobody = client.get(f"/v1/jobs/{missing}/metrics", headers=bob.headers)
    # Then the answers differ only in the id they echo
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json()["error"] | {"message": None} == nobody.json()["error"] | {"message": None}
    assert theirs.json()["error"]["message"].replace(things.done_job, "<id>") == nobody.json()["error"][
        "message"
    ].replace(missing, "<id>")
