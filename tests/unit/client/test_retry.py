"""Retries: 429 and 503 honour Retry-After, connection errors back off exponentially, all within one deadline."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from atelier_client import Atelier, ConnectionFailed, RateLimited, RetryPolicy, ServiceUnavailable

from tests.unit.client.conftest import API_KEY, BASE_URL, JOB_ID, FakeAPI, FakeClock, error_reply, job_json

JOB_PATH = f"/v1/jobs/{JOB_ID}"


def test_a_429_is_retried_after_the_seconds_retry_after_gives(atelier: Atelier, api: FakeAPI, clock: FakeClock) -> None:
    # Given an API that is over the rate limit twice, asking for 2 s then 3 s
    api.on(
        "GET",
        JOB_PATH,
        error_reply(429, "too_many_requests", "slow down", **{"Retry-After": "2"}),
        error_reply(429, "too_many_requests", "slow down", **{"Retry-After": "3"}),
        httpx.Response(200, json=job_json(state="running")),
    )
    # When the job is read
    job = atelier.get_job(JOB_ID)
    # Then the client waited exactly as told, and got the job on the third try
    assert clock.sleeps == [2.0, 3.0]
    assert job.state == "running" and len(api.requests) == 3


def test_a_503_without_retry_after_backs_off_exponentially_to_the_cap(api: FakeAPI, clock: FakeClock) -> None:
    # Given a database that stays down, and a policy of 0.5 s doubling to at most 2 s within 10 s
    api.on("GET", JOB_PATH, httpx.Response(503, json={"error": {"code": "unavailable", "message": "db down"}}))
    policy = RetryPolicy(
        base_delay_s=0.5, max_delay_s=2.0, deadline_s=10.0, clock=clock.time, sleep=clock.sleep, random=lambda: 0.0
    )
    client = Atelier(BASE_URL, API_KEY, retry=policy, transport=httpx.MockTransport(api.handle))
    # When the job is read, Then it gives up with the API's error once the next wait would pass the deadline
    with pytest.raises(ServiceUnavailable) as raised:
        client.get_job(JOB_ID)
    assert raised.value.code == "unavailable" and raised.value.status == 503
    assert clock.sleeps == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert sum(clock.sleeps) <= 10.0


def test_a_retry_after_past_the_deadline_gives_up_at_once(atelier: Atelier, api: FakeAPI, clock: FakeClock) -> None:
    # Given a quota that frees up only in 120 s, beyond the 30 s deadline
    api.on("GET", JOB_PATH, error_reply(429, "too_many_requests", "quota", **{"Retry-After": "120"}))
    # When the job is read, Then the 429 comes back without any waiting, with its Retry-After
    with pytest.raises(RateLimited) as raised:
        atelier.get_job(JOB_ID)
    assert clock.sleeps == []
    assert raised.value.retry_after_s == 120.0 and len(api.requests) == 1


def test_connection_errors_are_retried_until_the_deadline(api: FakeAPI, clock: FakeClock, policy: RetryPolicy) -> None:
    # Given a server that refuses connections twice, then answers
    attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) <= 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=job_json())

    client = Atelier(BASE_URL, API_KEY, retry=policy, transport=httpx.MockTransport(flaky))
    # When the job is read, Then it succeeds after two backoffs
    assert client.get_job(JOB_ID).id == JOB_ID
    assert clock.sleeps == [0.5, 1.0]

    # And a server that never answers ends in ConnectionFailed within the deadline
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    clock.sleeps.clear()
    dead = Atelier(BASE_URL, API_KEY, retry=policy, transport=httpx.MockTransport(down))
    with pytest.raises(ConnectionFailed) as raised:
        dead.get_job(JOB_ID)
    assert raised.value.code == "connection_failed" and raised.value.status is None
    assert sum(clock.sleeps) <= policy.deadline_s


def test_an_upload_that_may_have_arrived_is_not_sent_twice(
    clock: FakeClock, policy: RetryPolicy, tmp_path: Path
) -> None:
    # Given a server that drops the connection after reading an upload (it may have stored it)
    sent: list[int] = []

    def drop(request: httpx.Request) -> httpx.Response:
        request.read()
        sent.append(1)
        raise httpx.ReadError("connection reset", request=request)

    client = Atelier(BASE_URL, API_KEY, retry=policy, transport=httpx.MockTransport(drop))
    image = tmp_path / "a.png"
    image.write_bytes(b"\x89PNG fake")
    # When it is uploaded, Then the failure is reported and nothing is re-sent
    with pytest.raises(ConnectionFailed):
        client.upload_files([image])
    assert sent == [1] and clock.sleeps == []


def test_every_request_has_a_timeout(atelier: Atelier, api: FakeAPI) -> None:
    # Given any request
    api.on("GET", JOB_PATH, httpx.Response(200, json=job_json()))
    atelier.get_job(JOB_ID)
    # Then it carried connect, read, write and pool timeouts
    timeout = api.requests[0].extensions["timeout"]
    assert all(timeout[k] is not None and timeout[k] > 0 for k in ("connect", "read", "write", "pool"))
