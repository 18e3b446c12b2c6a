"""The API's request metrics (route templates, counted when a response starts) and /metrics' token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from services.api.app import _install_error_handlers
from services.api.metrics import UNMATCHED, ApiMetrics, JobTableCollector, RequestMetricsMiddleware
from services.api.routes import metrics as metrics_route
from shared.config import Settings

TOKEN = "metrics-secret-token"


def _count(metrics: ApiMetrics, route: str, method: str, status: int) -> float:
    value = metrics.registry.get_sample_value(
        "atelier_http_requests_total", {"route": route, "method": method, "status": str(status)}
    )
    return value or 0.0


def _app(metrics: ApiMetrics) -> FastAPI:
    """A small app with a path parameter, a stream and a crash behind the middleware."""
    router = APIRouter(prefix="/v1/jobs")
    seen_mid_stream: list[float] = []

    @router.get("/{job_id}")
    def get_job(job_id: str) -> dict[str, str]:
        return {"id": job_id}

    @router.get("/{job_id}/events")
    def events(job_id: str) -> StreamingResponse:
        def stream() -> Iterator[bytes]:
            yield b"data: first\n\n"
            seen_mid_stream.append(_count(metrics, "/v1/jobs/{job_id}/events", "GET", 200))
            yield b"data: second\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @router.post("/{job_id}/crash")
    def crash(job_id: str) -> None:
        raise RuntimeError("a bug")

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    app.state.seen_mid_stream = seen_mid_stream
    return app


def test_requests_are_labelled_by_route_template_not_path() -> None:
    metrics = ApiMetrics()
    client = TestClient(_app(metrics), raise_server_exceptions=False)
    for job_id in ("a", "b", "c"):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert client.get("/no/such/route").status_code == 404
    assert client.post("/v1/jobs/x/crash").status_code == 500
    assert _count(metrics, "/v1/jobs/{job_id}", "GET", 200) == 3
    assert _count(metrics, UNMATCHED, "GET", 404) == 1
    assert _count(metrics, "/v1/jobs/{job_id}/crash", "POST", 500) == 1
    latency = metrics.registry.get_sample_value(
        "atelier_http_request_duration_seconds_count", {"route": "/v1/jobs/{job_id}", "method": "GET"}
    )
    assert latency == 3
    exported = metrics.registry.collect()
    assert not any("/v1/jobs/a" in str(s.labels) for family in exported for s in family.samples)


def test_a_stream_is_counted_when_it_starts_and_not_buffered() -> None:
    metrics = ApiMetrics()
    app = _app(metrics)
    with TestClient(app).stream("GET", "/v1/jobs/j/events") as response:
        chunks = list(response.iter_bytes())
    assert b"".join(chunks) == b"data: first\n\ndata: second\n\n"
    assert app.state.seen_mid_stream == [1.0]  # counted before the body ended


def _metrics_app(token: str | None) -> TestClient:
    app = FastAPI()
    _install_error_handlers(app)  # the API's error format: a 401 with WWW-Authenticate
    app.include_router(metrics_route.router)
    app.state.atelier = SimpleNamespace(settings=Settings(metrics_token=token), metrics=ApiMetrics())
    return TestClient(app)


def test_metrics_are_open_without_a_token() -> None:
    response = _metrics_app(None).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE atelier_http_requests_total counter" in response.text


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, "Bearer "])
def test_metrics_refuse_a_missing_or_wrong_token(header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = _metrics_app(TOKEN).get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"
    assert "atelier_" not in response.text


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_metrics_answer_the_right_token(scheme: str) -> None:
    response = _metrics_app(TOKEN).get("/metrics", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert response.status_code == 200
    assert "atelier_jobs_submitted" in response.text


class _StuckSessions:
    """A session factory whose database never answers (until released)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __call__(self) -> Any:
        self.release.wait(10)
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_the_job_table_collector_yields_nothing_when_postgres_fails() -> None:
    collector = JobTableCollector(deadline_s=0.2)
    broken = _StuckSessions()
    broken.release.set()  # fails at once
    collector.sessions = broken  # type: ignore[assignment]
    assert list(collector.collect()) == []
    stuck = _StuckSessions()
    collector.sessions = stuck  # type: ignore[assignment]
    started = time.monotonic()
    assert list(collector.collect()) == []  # past its deadline
    assert list(collector.collect()) == []  # the stuck query is not piled on
    assert time.monotonic() - started < 2.0
    stuck.release.set()
    collector.close()


def test_a_scrape_still_answers_when_postgres_fails() -> None:
    metrics = ApiMetrics()
    broken = _StuckSessions()
    broken.release.set()
    metrics.job_table.sessions = broken  # type: ignore[assignment]
    app = FastAPI()
    app.include_router(metrics_route.router)
    app.state.atelier = SimpleNamespace(settings=Settings(), metrics=metrics)
    response = TestClient(app).get("/metrics")
    assert response.status_code == 200
    assert "atelier_http_requests_total" in response.text
    assert "atelier_queue_depth" not in response.text
    metrics.job_table.close()
