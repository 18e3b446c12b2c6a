"""API v1 against real Postgres, Redis and the S3 server (no worker: jobs stay queued).

Each test reads Given / When / Then."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from shared.db import queries
from shared.db.session import transaction
from tests.conftest import Caller
from tests.support.images import jpeg, png, tar_of, zip_of

pytestmark = pytest.mark.integration

GAN = {"type": "gan.train", "params": {"dataset": "digits", "steps": 10}}
STYLE = {"type": "style.transfer", "params": {"content": "astronaut", "styles": ["coffee"], "size": 64}}


def submit(client: TestClient, caller: Caller, body: dict, **headers: str):  # type: ignore[no-untyped-def]
    return client.post("/v1/jobs", json=body, headers={**caller.headers, **headers})


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "storage": "ok"}


def test_submit_then_poll(client: TestClient, alice: Caller) -> None:
    # When a job is submitted
    created = submit(client, alice, GAN)
    # Then it is queued, with a location and progress totals from its params
    assert created.status_code == 201, created.text
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "queued"
    assert job["attempt"] == 0
    assert job["progress"] == {"step": 0, "total": 10, "fraction": 0.0, "steps_per_second": None, "eta_seconds": None}
    assert job["params"]["batch_size"] == 64  # defaults are filled in and stored
    polled = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()
    assert polled["id"] == job["id"]
    assert polled["links"]["artifacts"] == f"/v1/jobs/{job['id']}/artifacts"


def test_idempotency_key_returns_the_same_job(client: TestClient, alice: Caller) -> None:
    first = submit(client, alice, GAN, **{"Idempotency-Key": "abc-1"})
    again = submit(client, alice, GAN, **{"Idempotency-Key": "abc-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    # A different body under the same key is refused rather than silently ignored
    other = submit(client, alice, STYLE, **{"Idempotency-Key": "abc-1"})
    assert other.status_code == 409
    assert other.json()["error"]["field"] == "Idempotency-Key"


def test_idempotency_keys_are_per_tenant(client: TestClient, alice: Caller, bob: Caller) -> None:
    a = submit(client, alice, GAN, **{"Idempotency-Key": "shared"})
    b = submit(client, bob, GAN, **{"Idempotency-Key": "shared"})
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    ("body", "status", "field", "needle"),
    [
        ({"type": "gan.explode", "params": {}}, 422, "type", "unknown job type 'gan.explode'"),
        ({"type": "gan.train", "params": {"steps": -5}}, 422, "params.steps", "greater than or equal to 1"),
        ({"type": "gan.train", "params": {"batch_size": 0}}, 422, "params.batch_size", "greater than or equal to 1"),
        (
            {"type": "gan.train", "params": {"image_size": 100000}},
            422,
            "params.image_size",
            "image_size must be one of",
        ),
        ({"type": "gan.train", "params": {"dataset": "imagenet22k"}}, 422, "params.dataset", "unknown dataset"),
        ({"type": "gan.train", "params": {"stepz": 5}}, 422, "params.stepz", "Extra inputs are not permitted"),
        ({**STYLE, "params": {**STYLE["params"], "size": 100000}}, 422, "params.size", "over this server's limit"),
        ({**STYLE, "params": {**STYLE["params"], "styles": []}}, 422, "params.styles", "at least 1 item"),
        ({**STYLE, "params": {**STYLE["params"], "style_blend": [0.5, 0.5]}}, 422, "params", "style_blend has 2"),
        ({**STYLE, "params": {**STYLE["params"], "content": "nope"}}, 422, "params.content", "unknown image 'nope'"),
        ({"type": "gan.sample", "params": {"source_job": str(uuid.uuid4())}}, 422, "params.source_job", "not found"),
        # an id with a trailing newline: "$" matched before it, then uuid.UUID() raised (a 500)
        ({"type": "gan.sample", "params": {"source_job": f"{uuid.uuid4()}\n"}}, 422, "params.source_job", "job id"),
        ({"type": "gan.train", "params": {"dataset": f"{uuid.uuid4()}\n"}}, 422, "params.dataset", "unknown dataset"),
        ({"type": "gan.train", "params": {"steps": "10"}}, 422, "params.steps", "valid integer"),
        ({"type": "gan.train"}, 201, None, None),
        ({"params": {}}, 422, "type", "Field required"),
    ],
)
def test_bad_submissions_get_4xx_naming_the_field(
    client: TestClient, alice: Caller, body: dict, status: int, field: str | None, needle: str | None
) -> None:
    response = submit(client, alice, body)
    assert response.status_code == status, response.text
    stored = client.get("/v1/jobs", headers=alice.headers).json()["items"]
    if status >= 400:
        error = response.json()["error"]
        assert error["field"] == field
        assert needle is not None and needle in error["message"]
        # rejected before anything is stored or queued: no worker ever sees it
        assert stored == []
    else:
        assert [j["id"] for j in stored] == [response.json()["id"]]


def test_sample_needs_a_succeeded_train_job_of_yours(client: TestClient, alice: Caller, bob: Caller) -> None:
    queued = submit(client, alice, GAN).json()
    mine = submit(client, alice, {"type": "gan.sample", "params": {"source_job": queued["id"]}})
    assert mine.status_code == 422
    assert "is queued; it must have succeeded" in mine.json()["error"]["message"]
    theirs = submit(client, bob, {"type": "gan.sample", "params": {"source_job": queued["id"]}})
    assert theirs.status_code == 422
    assert "not found" in theirs.json()["error"]["message"]


def test_no_key_or_wrong_key_is_401(client: TestClient, alice: Caller) -> None:
    job = submit(client, alice, GAN).json()
    for headers in ({}, {"Authorization": "Bearer atl_wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        for method, path in (
            ("GET", "/v1/jobs"),
            ("GET", f"/v1/jobs/{job['id']}"),
            ("POST", "/v1/jobs"),
            ("POST", "/v1/uploads"),
        ):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 200
    with transaction(sessions) as session:
        assert queries.revoke_api_key(session, prefix=alice.key[:12]) == 1
    assert client.get("/v1/jobs", headers=alice.headers).status_code == 401


def test_other_tenants_jobs_are_404(client: TestClient, alice: Caller, bob: Caller) -> None:
    job = submit(client, alice, GAN).json()
    for method, suffix in (
        ("GET", ""),
        ("GET", "/metrics"),
        ("GET", "/artifacts"),
        ("GET", "/artifacts/generator.pt"),
        ("POST", "/cancel"),
    ):
        response = client.request(method, f"/v1/jobs/{job['id']}{suffix}", headers=bob.headers)
        assert response.status_code == 404, (suffix, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert job["id"] not in {j["id"] for j in client.get("/v1/jobs", headers=bob.headers).json()["items"]}
    # and alice's view is unchanged
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()["state"] == "queued"


def test_list_filters_and_cursor_pagination(client: TestClient, alice: Caller) -> None:
    ids = [submit(client, alice, GAN).json()["id"] for _ in range(5)]
    style_id = submit(client, alice, STYLE).json()["id"]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "type": "gan.train"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params, headers=alice.headers).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once, style job filtered out
    assert style_id not in seen
    by_state = client.get("/v1/jobs", params={"state": "queued", "type": "style.transfer"}, headers=alice.headers)
    assert [j["id"] for j in by_state.json()["items"]] == [style_id]
    bad = client.get("/v1/jobs", params={"cursor": "garbage!!"}, headers=alice.headers)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"
    too_many = client.get("/v1/jobs", params={"limit": 100000}, headers=alice.headers)
    assert too_many.status_code == 422 and too_many.json()["error"]["field"] == "limit"
    bad_state = client.get("/v1/jobs", params={"state": "exploded"}, headers=alice.headers)
    assert bad_state.status_code == 422 and bad_state.json()["error"]["field"] == "state"


def test_cancel_queued_job_is_immediate_and_final(client: TestClient, alice: Caller) -> None:
    job = submit(client, alice, GAN).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers)
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["finished_at"] is not None
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"


def test_metrics_are_downsampled_server_side(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    # Given a job with 1000 steps of two metrics (written as a runner would)
    job = submit(client, alice, GAN).json()
    job_id = uuid.UUID(job["id"])
    rows = [(name, step, float(step)) for step in range(1, 1001) for name in ("d_loss", "g_loss")]
    with transaction(sessions) as session:
        queries.upsert_metrics(session, job_id=job_id, attempt=1, metrics=rows)
        queries.upsert_metrics(session, job_id=job_id, attempt=1, metrics=rows[:10])  # replay: no duplicates
    url = f"/v1/jobs/{job['id']}/metrics"
    # When everything is asked for with the default cap
    full = client.get(url, params={"max_points": 1000}, headers=alice.headers).json()
    assert full["names"] == ["d_loss", "g_loss"]
    assert [p["step"] for p in full["series"]["d_loss"]] == list(range(1, 1001))
    # When downsampled to 10 points: 10 buckets of 100 steps, mean values, ranges kept
    small = client.get(url, params={"max_points": 10, "names": "g_loss"}, headers=alice.headers).json()
    points = small["series"]["g_loss"]
    assert list(small["series"]) == ["g_loss"]
    assert len(points) == 10
    assert points[0] == {"step": 100, "value": 50.5, "min": 1.0, "max": 100.0, "count": 100}
    assert points[-1]["step"] == 1000 and points[-1]["max"] == 1000.0
    # since_step returns only later steps
    tail = client.get(url, params={"since_step": 995, "names": ["d_loss"]}, headers=alice.headers).json()
    assert [p["step"] for p in tail["series"]["d_loss"]] == [996, 997, 998, 999, 1000]
    bad = client.get(url, params={"max_points": 0}, headers=alice.headers)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "max_points"


def test_openapi_has_a_working_example_per_job_type(client: TestClient, alice: Caller) -> None:
    spec = client.get("/openapi.json").json()
    examples = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == {"gan.train", "style.transfer", "style.train", "style.apply", "gan.sample"}
    for name in ("gan.train", "style.transfer", "style.train"):  # the others name an earlier job
        response = submit(client, alice, examples[name]["value"])
        assert response.status_code == 201, (name, response.text)


# --- uploads --------------------------------------------------------------------------


def upload(client: TestClient, caller: Caller, files: list[tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    return client.post("/v1/uploads", files=[("files", (name, data)) for name, data in files], headers=caller.headers)


def test_upload_images_and_use_them(client: TestClient, alice: Caller, bob: Caller, store) -> None:  # type: ignore[no-untyped-def]
    response = upload(client, alice, [("a.png", png()), ("b.jpg", jpeg())])
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["file_count"] == 2 and body["classes"] == []
    assert {f["path"] for f in body["files"]} == {"a.png", "b.jpg"}
    assert store.exists(f"uploads/{alice.tenant_id}/{body['id']}/a.png")
    # usable as a dataset and as a style image by its owner...
    for job in (
        {"type": "gan.train", "params": {"dataset": body["id"], "steps": 5}},
        {**STYLE, "params": {**STYLE["params"], "styles": [body["id"]]}},
    ):
        assert submit(client, alice, job).status_code == 201
    # ...but not by another tenant, who can't see it either
    theirs = submit(client, bob, {"type": "gan.train", "params": {"dataset": body["id"]}})
    assert theirs.status_code == 422 and theirs.json()["error"]["field"] == "params.dataset"
    assert client.get(f"/v1/uploads/{body['id']}", headers=bob.headers).status_code == 404
    assert client.get(f"/v1/uploads/{body['id']}", headers=alice.headers).json()["id"] == body["id"]


def test_upload_archive_with_class_folders(client: TestClient, alice: Caller) -> None:
    archive = zip_of({"set/cats/1.png": png(color=(1, 2, 3)), "set/dogs/1.png": png(), "set/dogs/2.png": png()})
    body = upload(client, alice, [("set.zip", archive)]).json()
    assert body["file_count"] == 3
    assert body["classes"] == ["cats", "dogs"]  # the common top folder is stripped
    tarred = upload(client, alice, [("set.tgz", tar_of({"x/1.png": png(), "y/2.png": png()}))]).json()
    assert tarred["classes"] == ["x", "y"]


@pytest.mark.parametrize(
    ("files", "status", "needle"),
    [
        ([("notes.png", b"<html><body>hi</body></html>")], 415, "not an image"),
        ([("cut.jpg", jpeg()[:300])], 422, "corrupt or truncated"),
        ([("evil.zip", zip_of({"../../etc/passwd.png": png()}))], 422, "escapes the archive"),
        ([("evil.tar.gz", tar_of({"ok/../../x.png": png()}))], 422, "escapes the archive"),
        ([("abs.zip", zip_of({"/etc/x.png": png()}))], 422, "absolute path"),
        ([("huge.png", png(9000, 9000))], 413, "pixels; the limit is"),
    ],
)
def test_bad_uploads_get_4xx_and_store_nothing(
    client: TestClient,
    alice: Caller,
    store,
    files: list,
    status: int,
    needle: str,  # type: ignore[no-untyped-def]
) -> None:
    before = sum(
        1 for _ in store.client.list_objects(store.bucket, prefix=f"uploads/{alice.tenant_id}/", recursive=True)
    )
    response = upload(client, alice, files)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert response.json()["error"]["field"] == "files"
    after = sum(
        1 for _ in store.client.list_objects(store.bucket, prefix=f"uploads/{alice.tenant_id}/", recursive=True)
    )
    assert after == before
    assert client.get("/healthz").status_code == 200


def test_too_large_upload_is_413(client: TestClient, alice: Caller, settings) -> None:  # type: ignore[no-untyped-def]
    blob = b"\0" * (settings.max_upload_bytes + 200_000)
    response = upload(client, alice, [("big.png", blob)])
    assert response.status_code == 413
    assert "limit" in response.json()["error"]["message"]


def test_upload_without_files_is_422(client: TestClient, alice: Caller) -> None:
    response = client.post("/v1/uploads", headers=alice.headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "files"
