"""Prometheus metrics of the API: requests by route template, submits, and the job table at scrape time.

Request metrics come from a pure ASGI middleware that never touches a response body, so streams
(SSE) pass through as they are: a request is counted, and its latency observed, when its response
starts (time to first byte). The label is the matched route's template (``/v1/jobs/{job_id}``),
never the raw path, so the series stay bounded; a request no route took (a 404, or one refused by
a middleware before routing) is ``unmatched``.

Queue depth, the oldest queued job's age and the number of jobs per type and state are read from
Postgres when Prometheus scrapes, with one short deadline. On any database error the collector
yields nothing: the scrape still answers, and the gap shows on the dashboard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.jobs.specs import JOB_TYPES

log = logging.getLogger(__name__)

UNMATCHED = "unmatched"  # the route label of a request no route took
SERVER_ERROR = 500
SCRAPE_DB_DEADLINE_S = 2.0  # the scrape-time queries; Prometheus' own scrape timeout is 10 s by default
# Time to first byte: most routes answer in milliseconds, uploads and Prefer: wait take seconds.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

QUEUED_BY_QUEUE = text(
    "SELECT queue, count(*), extract(epoch FROM now() - min(created_at)) "
    "FROM jobs WHERE state = 'queued' GROUP BY queue"
)
JOBS_BY_TYPE_STATE = text("SELECT type, state, count(*) FROM jobs GROUP BY type, state")
STATEMENT_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, true)")  # this transaction only


class JobTableCollector(Collector):
    """Queue depth and oldest queued age per queue, and jobs per type and state, read at scrape time."""

    def __init__(self, *, deadline_s: float = SCRAPE_DB_DEADLINE_S) -> None:
        self.deadline_s = deadline_s
        self.sessions: sessionmaker[Session] | None = None  # set by the app's lifespan
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[tuple[list[Metric], ...]] | None = None

    def collect(self) -> Iterable[Metric]:
        """The gauges, or nothing if Postgres did not answer within the deadline."""
        if self.sessions is None:
            return []
        if self._pending is not None and not self._pending.done():
            return []  # the last scrape's query is still stuck: never pile up more
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-db")
        self._pending = self._pool.submit(self._read, self.sessions)
        try:
            families = self._pending.result(timeout=self.deadline_s)
        except FutureTimeout:
            log.warning("metrics: the job table did not answer within %.1fs", self.deadline_s)
            return []
        except Exception as exc:
            log.warning("metrics: could not read the job table: %s", type(exc).__name__)
            return []
        return [metric for group in families for metric in group]

    def describe(self) -> Iterable[Metric]:
        """Nothing: the registry must not run the query when this collector is registered."""
        return []

    def _read(self, sessions: sessionmaker[Session]) -> tuple[list[Metric], ...]:
        with sessions() as session, session.begin():
            session.execute(STATEMENT_TIMEOUT, {"ms": str(int(self.deadline_s * 1000))})
            queued = session.execute(QUEUED_BY_QUEUE).all()
            totals = session.execute(JOBS_BY_TYPE_STATE).all()
        depth = GaugeMetricFamily("atelier_queue_depth", "Jobs waiting in each queue", labels=["queue"])
        oldest = GaugeMetricFamily(
            "atelier_queue_oldest_age_seconds", "Age of the oldest queued job in each queue (0: none)", labels=["queue"]
        )
        seen = set()
        for queue, count, age_s in queued:
            seen.add(queue)
            depth.add_metric([queue], float(count))
            oldest.add_metric([queue], float(age_s or 0.0))
        for queue in sorted({spec.queue for spec in JOB_TYPES.values()} - seen):  # an empty queue is 0, not absent
            depth.add_metric([queue], 0.0)
            oldest.add_metric([queue], 0.0)
        jobs = GaugeMetricFamily(
            "atelier_jobs",
            "Jobs in Postgres by type and state (the same in every API process)",
            labels=["type", "state"],
        )
        for job_type, state, count in totals:
            jobs.add_metric([job_type, state], float(count))
        return [depth, oldest], [jobs]

    def close(self) -> None:
        """Stop the query thread (a query in flight ends at its statement timeout)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool, self._pending = None, None


class ApiMetrics:
    """One API app's metrics, on a registry of its own (tests build many apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "atelier_http_requests",
            "HTTP requests by route template, method and status code",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "atelier_http_request_duration_seconds",
            "Seconds from a request's arrival to its response's start (time to first byte)",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.jobs_submitted = Counter(
            "atelier_jobs_submitted", "Jobs created by POST /v1/jobs, by type", ["type"], registry=self.registry
        )
        self.job_table = JobTableCollector()
        self.registry.register(self.job_table)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one response and its time to first byte."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)


def route_label(scope: Scope) -> str:
    """The template of the route that took the request (``/v1/jobs/{job_id}``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetricsMiddleware:
    """Counts each HTTP response by route template and status when it starts; never buffers a body."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; observe its response's first message."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        started = False

        async def timed_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                self.metrics.observe(
                    route_label(scope), scope["method"], message["status"], time.perf_counter() - start
                )
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:
            if not started:  # the server's error handler answers 500 outside this middleware
                self.metrics.observe(route_label(scope), scope["method"], SERVER_ERROR, time.perf_counter() - start)
            raise
