"""Requests and answers: idempotent submits, Prefer: wait, pagination, error mapping, typed results."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from atelier_client import (
    AsyncAtelier,
    Atelier,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    ServerError,
    Unauthorized,
)
from atelier_client.config import Credentials, resolve, write_config

from tests.unit.client.conftest import API_KEY, JOB_ID, FakeAPI, error_reply, job_json


def test_a_submit_keeps_one_idempotency_key_across_its_retries(atelier: Atelier, api: FakeAPI) -> None:
    # Given an API whose database blips twice during a submit
    api.on(
        "POST",
        "/v1/jobs",
        error_reply(503, "unavailable", "database unavailable", **{"Retry-After": "1"}),
        error_reply(503, "unavailable", "database unavailable", **{"Retry-After": "1"}),
        httpx.Response(201, json=job_json()),
    )
    # When a job is submitted
    job = atelier.submit("gan.train", {"dataset": "digits", "steps": 10})
    # Then all three tries carried the same generated key, and the body as given
    keys = {r.headers["Idempotency-Key"] for r in api.requests}
    assert len(api.requests) == 3 and len(keys) == 1
    assert len(keys.pop()) == 36  # a uuid4
    assert json.loads(api.bodies[0]) == {"type": "gan.train", "params": {"dataset": "digits", "steps": 10}}
    assert job.id == JOB_ID and job.state == "queued"
    # And the next submit gets a key of its own
    atelier.submit("gan.train", {"dataset": "digits"})
    assert api.requests[-1].headers["Idempotency-Key"] != api.requests[0].headers["Idempotency-Key"]


def test_submit_sends_prefer_wait_webhooks_and_a_longer_read_timeout(atelier: Atelier, api: FakeAPI) -> None:
    api.on("POST", "/v1/jobs", httpx.Response(200, json=job_json(state="succeeded")))
    job = atelier.submit(
        "style.transfer",
        {"content": "astronaut", "styles": ["coffee"]},
        webhook="https://example.test/hook",
        webhook_events_filter=["start", "completed"],
        wait=30,
    )
    request = api.requests[0]
    assert request.headers["Prefer"] == "wait=30"
    assert request.extensions["timeout"]["read"] > 30
    body = json.loads(api.bodies[0])
    assert body["webhook"] == "https://example.test/hook" and body["webhook_events_filter"] == ["start", "completed"]
    assert job.done and job.succeeded
    with pytest.raises(ValueError, match="wait"):
        atelier.submit("gan.train", {}, wait=61)
    with pytest.raises(ValueError, match="webhook_events_filter"):
        atelier.submit("gan.train", {}, webhook_events_filter=["finished"])


def _pager(items: list[dict[str, object]], size: int):  # type: ignore[no-untyped-def]
    def reply(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params.get("cursor", "0"))
        end = start + size
        return httpx.Response(
            200, json={"items": items[start:end], "next_cursor": str(end) if end < len(items) else None}
        )

    return reply


def test_pagination_walks_every_page_of_every_list(atelier: Atelier, api: FakeAPI) -> None:
    # Given 7 jobs, 5 artifacts, 3 uploads and 4 webhook deliveries, served two to a page
    jobs = [job_json(job_id=f"job-{i}") for i in range(7)]
    artifacts = [{"name": f"samples/{i}.png", "size": i, "sha256": "", "kind": "sample"} for i in range(5)]
    uploads = [{"id": f"up-{i}", "file_count": 1} for i in range(3)]
    deliveries = [{"id": f"d-{i}", "event": "artifact", "event_id": i, "state": "delivered"} for i in range(4)]
    api.on("GET", "/v1/jobs", _pager(jobs, 2))
    api.on("GET", f"/v1/jobs/{JOB_ID}/artifacts", _pager(artifacts, 2))
    api.on("GET", "/v1/uploads", _pager(uploads, 2))
    api.on("GET", f"/v1/jobs/{JOB_ID}/webhooks", _pager(deliveries, 2))
    # When each is iterated, Then every item comes, in order, a page at a time
    assert [j.id for j in atelier.jobs(state="succeeded")] == [f"job-{i}" for i in range(7)]
    assert [a.name for a in atelier.artifacts(JOB_ID)] == [f"samples/{i}.png" for i in range(5)]
    assert [u.id for u in atelier.uploads()] == ["up-0", "up-1", "up-2"]
    assert [(d.id, d.event_id) for d in atelier.webhook_deliveries(JOB_ID)] == [(f"d-{i}", i) for i in range(4)]
    job_pages = api.to("GET", "/v1/jobs")
    assert len(job_pages) == 4
    assert [parse_qs(r.url.query.decode()).get("cursor") for r in job_pages] == [None, ["2"], ["4"], ["6"]]
    assert all(parse_qs(r.url.query.decode())["state"] == ["succeeded"] for r in job_pages)


def test_pagination_works_the_same_asynchronously(async_atelier: AsyncAtelier, api: FakeAPI) -> None:
    api.on("GET", "/v1/jobs", _pager([job_json(job_id=f"job-{i}") for i in range(5)], 2))

    async def ids() -> list[str]:
        async with async_atelier:
            return [j.id async for j in async_atelier.jobs()]

    assert asyncio.run(ids()) == [f"job-{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("reply", "kind", "code", "field"),
    [
        (
            error_reply(422, "invalid_input", "params.steps: at least 1", "params.steps"),
            InvalidInput,
            "invalid_input",
            "params.steps",
        ),
        (error_reply(401, "unauthorized", "unknown API key"), Unauthorized, "unauthorized", None),
        (error_reply(404, "not_found", "job not found"), NotFound, "not_found", None),
        (error_reply(409, "conflict", "job already finished"), Conflict, "conflict", None),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError, "internal", None),
    ],
)
def test_errors_carry_the_apis_code_message_field_and_status(
    atelier: Atelier, api: FakeAPI, reply: httpx.Response, kind: type[Exception], code: str, field: str | None
) -> None:
    api.on("POST", f"/v1/jobs/{JOB_ID}/cancel", reply)
    with pytest.raises(kind) as raised:
        atelier.cancel(JOB_ID)
    error = raised.value
    assert error.code == code and error.field == field and error.status == reply.status_code  # type: ignore[attr-defined]
    assert str(error).startswith(f"{code}: ")
    if field:
        assert str(error).endswith(f"(field: {field})")
    if reply.status_code == 502:
        assert "bad gateway" in error.message  # type: ignore[attr-defined]


def test_a_500_keeps_its_request_id(atelier: Atelier, api: FakeAPI) -> None:
    api.on(
        "GET",
        f"/v1/jobs/{JOB_ID}",
        httpx.Response(500, json={"error": {"code": "internal", "message": "quote abc", "request_id": "abc"}}),
    )
    with pytest.raises(ServerError) as raised:
        atelier.get_job(JOB_ID)
    assert raised.value.request_id == "abc"


def test_requests_authenticate_and_quote_ids_into_the_path(atelier: Atelier, api: FakeAPI) -> None:
    api.on("GET", "/v1/jobs/../uploads", httpx.Response(200, json=job_json()))  # the decoded path
    atelier.get_job("../uploads")
    request = api.requests[0]
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.url.raw_path.startswith(b"/v1/jobs/..%2Fuploads")
    assert API_KEY not in repr(atelier)


def test_results_are_typed_and_extra_fields_are_ignored(atelier: Atelier, api: FakeAPI) -> None:
    body = job_json(
        state="failed",
        progress={"step": 5, "total": 10, "fraction": 0.5, "steps_per_second": 2.5, "eta_seconds": 2.0},
        metrics={"d_loss": 0.7, "g_loss": 1.1},
        error={"code": "diverged", "message": "NaN at step 5"},
        checkpoint={"step": 4},
        brand_new_field={"x": 1},
    )
    api.on("GET", f"/v1/jobs/{JOB_ID}", httpx.Response(200, json=body))
    job = atelier.get_job(JOB_ID)
    assert job.progress.step == 5 and job.progress.eta_seconds == 2.0
    assert job.latest_metrics == {"d_loss": 0.7, "g_loss": 1.1}
    assert job.error is not None and job.error.code == "diverged"
    assert job.checkpoint_step == 4 and job.done and not job.succeeded
    assert job.created_at is not None and job.created_at.year == 2025
    api.on(
        "GET",
        f"/v1/jobs/{JOB_ID}/metrics",
        httpx.Response(
            200, json={"series": {"g_loss": [{"step": 1, "value": 2.0, "min": 1.0, "max": 3.0, "count": 2}]}}
        ),
    )
    series = job.metrics(names=["g_loss"], max_points=10)
    assert series["g_loss"].steps == [1] and series["g_loss"].values == [2.0]
    assert parse_qs(api.requests[-1].url.query.decode())["names"] == ["g_loss"]


def test_config_comes_from_arguments_then_environment_then_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    write_config(path, Credentials(url="http://file.test/", api_key='k"ey\\'))
    env = {"ATELIER_URL": "http://env.test", "ATELIER_API_KEY": "env-key"}
    assert resolve(env={}, path=path) == Credentials(url="http://file.test", api_key='k"ey\\')
    assert resolve(env=env, path=path) == Credentials(url="http://env.test", api_key="env-key")
    assert resolve("http://arg.test", "arg-key", env=env, path=path) == Credentials("http://arg.test", "arg-key")
    assert resolve(env={"ATELIER_URL": "http://file.test"}, path=path).api_key == 'k"ey\\'
    # The stored key belongs to the stored URL: it is not sent to a server named elsewhere
    with pytest.raises(ConfigError, match="ATELIER_API_KEY"):
        resolve(env={"ATELIER_URL": "http://elsewhere.test"}, path=path)
    with pytest.raises(ConfigError, match="no API URL"):
        resolve(env={}, path=tmp_path / "missing.toml")


def test_submit_sends_a_priority_and_a_job_reads_its_queueing(atelier: Atelier, api: FakeAPI) -> None:
    # Given the API answers a queued job with its place in the queue
    body = job_json(priority="high", queueing={"position": 2, "reason": "behind 1 of your jobs"})
    api.on("POST", "/v1/jobs", httpx.Response(201, json=body))
    # When a job is submitted with a priority
    job = atelier.submit("gan.train", {"dataset": "digits"}, priority="high")
    # Then the body carries it, and the job reads its priority, place and reason
    assert json.loads(api.bodies[0])["priority"] == "high"
    assert (job.priority, job.queue_position, job.pending_reason) == ("high", 2, "behind 1 of your jobs")
    # And an unknown priority is refused before anything is sent
    with pytest.raises(ValueError, match="priority"):
        atelier.submit("gan.train", {}, priority="urgent")
    assert len(api.requests) == 1
    # And a job without queueing (running, or from a list) has none
    api.on("POST", "/v1/jobs", httpx.Response(201, json=job_json(state="running")))
    running = atelier.submit("gan.train", {})
    assert (running.priority, running.queue_position, running.pending_reason) == ("normal", None, None)
