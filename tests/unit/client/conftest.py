"""Fakes for the client tests: an in-memory API behind httpx.MockTransport and a clock that
sleeps by moving itself forward. No network, no real time."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from atelier_client import AsyncAtelier, Atelier, RetryPolicy

BASE_URL = "http://atelier.test"
API_KEY = "ak_test_0123456789"
JOB_ID = "0b7a3c4e-1111-4222-8333-444455556666"

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


class FakeClock:
    """Monotonic time that only moves when someone sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


class FakeAPI:
    """Answers by (method, path) from queues of replies (the last one repeats); records every request."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"error": {"code": "http_error", "message": "Not Found"}})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return reply(request) if callable(reply) else reply

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(await request.aread())
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx.Response(404, json={"error": {"code": "http_error", "message": "Not Found"}})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        return reply(request) if callable(reply) else reply

    def to(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]


def job_json(job_id: str = JOB_ID, state: str = "queued", **fields: Any) -> dict[str, Any]:
    """A job body as the API renders it."""
    body: dict[str, Any] = {
        "id": job_id,
        "type": "gan.train",
        "state": state,
        "params": {"dataset": "digits"},
        "attempt": 1 if state != "queued" else 0,
        "max_attempts": 3,
        "handbacks": 0,
        "cancel_requested": False,
        "progress": {"step": 0, "total": 10, "fraction": 0.0, "steps_per_second": None, "eta_seconds": None},
        "metrics": {},
        "warnings": [],
        "error": None,
        "checkpoint": None,
        "resumed_from_step": None,
        "worker": None,
        "created_at": "2025-01-01T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "updated_at": "2025-01-01T00:00:00Z",
        "links": {},
    }
    body.update(fields)
    return body


def error_reply(status: int, code: str, message: str, field: str | None = None, **headers: str) -> httpx.Response:
    """An error answer in the API's envelope."""
    return httpx.Response(status, json={"error": {"code": code, "message": message, "field": field}}, headers=headers)


def sse(*events: tuple[int, str, dict[str, Any]]) -> bytes:
    """An event-stream body of (id, event, data) triples."""
    return b"".join(f"id: {i}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode() for i, name, data in events)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def policy(clock: FakeClock) -> RetryPolicy:
    """Retries on the fake clock, without jitter."""
    return RetryPolicy(
        base_delay_s=0.5,
        max_delay_s=8.0,
        deadline_s=30.0,
        clock=clock.time,
        sleep=clock.sleep,
        async_sleep=clock.async_sleep,
        random=lambda: 0.0,
    )


@pytest.fixture
def atelier(api: FakeAPI, policy: RetryPolicy) -> Atelier:
    return Atelier(BASE_URL, API_KEY, retry=policy, transport=httpx.MockTransport(api.handle))


@pytest.fixture
def async_atelier(api: FakeAPI, policy: RetryPolicy) -> AsyncAtelier:
    return AsyncAtelier(BASE_URL, API_KEY, retry=policy, transport=httpx.MockTransport(api.handle_async))
