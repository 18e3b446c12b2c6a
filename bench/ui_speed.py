"""Dashboard page speed: the jobs page with 10,000 jobs and a job's charts with 100,000 metric rows, in Chromium.

Run as ``python -m bench.ui_speed`` (``make bench-ui``). Like ``bench.api`` (whose machinery it reuses) it needs the
test Postgres and Redis (127.0.0.1:5432 and :6379): it creates a fresh database with migrations, claims a Redis db
index and uses a local-directory object store, then starts one API process as deployed (``bench.events.api_server``:
uvicorn with EdgeProtocol, no ``--workers``), which serves the dashboard at ``/``. No worker: nothing runs. Everything
is removed on exit, Ctrl-C included.

Seeded with SQL (INSERT ... SELECT over generate_series, seeded ``random()``), two tenants:
- large: 10,000 jobs of every type and state (newest first: a few queued and running, then mostly succeeded, some
  failed or cancelled), with params as submit stores them (validated and dumped by the job type's own class),
  progress, latest metrics, warnings, errors and their event logs; one of them, a succeeded ``gan.train`` on the
  first page, has 100,008 metric rows: 9 series (d_loss, g_loss, d_real, d_fake, grad_norm_d, grad_norm_g, lr_d,
  lr_g, d_skips) x 11,112 steps of training-like curves;
- reference: 20 such jobs; its ``gan.train`` has 1,008 rows (the same 9 series x 112 steps).
Then ANALYZE, as autovacuum would have run by the time someone looks (no VACUUM).

Measured in headless Chromium (Debian's, 1280 x 800, launched by tests/support/browser.py's ``launch``), one browser
and one context per tenant, the API key put in sessionStorage by an init script, a fresh page for every load. In each
repetition, for each tenant (the order alternating), two pages:
- ``/#/jobs`` until the page's ``atelier:jobs-ready`` mark (the table's first rows from the API), then an in-app
  navigation (a hash change, as a click on the job's link) to the job until ``atelier:charts-ready``;
- ``/#/jobs/<id>`` until ``atelier:charts-ready`` (its charts drew the server's points), then in-app to the jobs page.
Every time is the page's own clock: a mark's ``startTime`` (ms since navigation start) or, in-app, the mark minus
``performance.now()`` when the hash was set. The browser's resource timing gives each view's main API request
(``GET /v1/jobs``, or ``GET /v1/jobs/{id}/metrics?max_points=...``, where the server buckets each series): when it
started, its time to first byte (the server's work) and its size; each chart's ``data-points`` is the number of points
it holds. The first repetition warms the API and the browser's cache and is not counted.

Printed: medians and p90s per view, tenant and kind of navigation; the ratio large / reference (same process, same
browser, interleaved) for each; then the absolute medians of full page loads against the issue's targets (jobs page
interactive < 1 s with 10,000 jobs, charts drawn < 1 s with 100,000 metric rows), PASS or FAIL. The exit status is 1
when the benchmark could not measure, and with ``--strict`` also when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from playwright.sync_api import Error as PlaywrightError
from sqlalchemy import text, update
from sqlalchemy.orm import Session, sessionmaker

from bench.api import (
    HOST,
    LOG_TAIL_CHARS,
    MS,
    BenchError,
    bench_env,
    guarded_run,
    median,
    percentile,
    wait_until_serving,
)
from bench.events import api_server
from shared.db import queries
from shared.db.models import Job, Tenant
from shared.db.session import transaction
from shared.jobs.params import QUEUE_GPU
from shared.jobs.specs import JOB_TYPES
from shared.jobs.states import JobState
from tests.support import services
from tests.support.browser import children_by_parent

# --- what is seeded -------------------------------------------------------------------------
JOBS = 10_000
REFERENCE_JOBS = 20
METRIC_ROWS = 100_000  # rounded up to whole steps of every series
REFERENCE_METRIC_ROWS = 1_000
SERIES = ("d_loss", "g_loss", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "lr_d", "lr_g", "d_skips")
QUEUED_JOBS = 2  # the newest jobs of a tenant: waiting for a worker ...
RUNNING_JOBS = 4  # ... then training; every older job has ended
SUCCEEDED_SHARE = 0.78  # of the ended jobs; then failed up to FAILED_SHARE, the rest cancelled
FAILED_SHARE = 0.90
WARNED_SHARE = 0.06  # gan.train jobs with a "D has won" warning
JOB_SPACING_S = 37.0  # between two jobs' created_at: 10,000 jobs span about 4 days
METRICS_JOB_RATE = 150.0  # the metrics job's steps/s (started_at -> finished_at): a GPU's, for 16 px digits
METRICS_JOB_FINISHED_S = 30.0  # it finished this long before the seeding: on the jobs page's first page
RANDOM_SEED = 0.42  # Postgres setseed(): the same rows on every run
# Each template is drawn with its weight: mostly GAN training, some style transfer, a few sample jobs.
TEMPLATES: tuple[tuple[str, int, dict[str, Any]], ...] = (
    ("gan.train", 3, {"dataset": "digits", "steps": 2000, "batch_size": 64, "sample_every": 200}),
    ("gan.train", 2, {"dataset": "mnist", "steps": 5000, "batch_size": 128, "lr_d": 1e-4, "ema": 0.999}),
    ("gan.train", 2, {"dataset": "ring8", "preset": "stable", "steps": 16000, "batch_size": 128}),
    ("gan.train", 1, {"dataset": "grid25", "preset": "stable", "steps": 48000, "batch_size": 128}),
    ("gan.train", 1, {"dataset": "cifar10", "steps": 20000, "loss": "hinge", "spectral_norm": True}),
    ("gan.train", 1, {"dataset": "fashion-mnist", "steps": 3000, "preset": "stable"}),
    ("style.transfer", 2, {"content": "astronaut", "styles": ["coffee"], "size": 256, "steps": 300}),
    ("style.transfer", 1, {"content": "chelsea", "styles": ["coffee", "astronaut"], "style_blend": [0.7, 0.3],
                           "size": 384, "steps": 500, "optimizer": "lbfgs"}),
    ("gan.sample", 1, {"source_job": "5f0c6a3e-3d1b-4c55-9a1e-2b7f6e1d9c40", "n": 64}),
)  # fmt: skip
METRICS_JOB_PARAMS = {"dataset": "digits", "batch_size": 64, "lr_decay": "linear", "sample_every": 1000}

# --- what is measured -------------------------------------------------------------------------
REPEATS = 7
WARMUP = 1  # repetitions before the counted ones: the API's first queries and imports, the browser's cache
VIEWPORT = {"width": 1280, "height": 800}
TARGET_MS = 1000.0  # both targets: jobs page interactive, charts drawn
JOBS_READY = "atelier:jobs-ready"
CHARTS_READY = "atelier:charts-ready"
KEY_STORAGE = "atelier.apiKey"
JOBS_ROUTE = "#/jobs"
JOB_ROUTE = "#/jobs/{job_id}"
JOBS_REQUEST = "/v1/jobs?"  # the jobs view's page of jobs (limit, cursor)
METRICS_REQUEST = "/v1/jobs/{job_id}/metrics?"
ROW_SELECTOR = "main table tbody tr"
CHART_SELECTOR = "figure.chart"

# --- deadlines ----------------------------------------------------------------------------------
LAUNCH_TIMEOUT_MS = 30_000
NAVIGATION_TIMEOUT_MS = 30_000
READY_TIMEOUT_S = 30.0  # a mark must appear within this
POLL_S = 0.05  # how often the bench asks the page for a mark: its detection lag, not the measured time
PAGE_DEADLINE_S = 90.0  # one page, both its views; past it the browser is killed (page.evaluate has no timeout)
LAUNCH_DEADLINE_S = 60.0
CLOSE_DEADLINE_S = 15.0
DRIVER_ARG = b"run-driver"  # Playwright's Node driver: `node .../cli.js run-driver`

# Fallback when tests/support/browser.py is missing: the same Chromium and flags.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
)  # fmt: skip

# The page's strict CSP refuses eval, so every script the bench runs in the page is a function.
MARK_SINCE = """([name, since]) => {
  const mark = performance.getEntriesByName(name).find((m) => m.startTime >= since);
  return mark ? mark.startTime : null;
}"""
SET_HASH = """(hash) => {
  const t0 = performance.now();
  location.hash = hash;
  return t0;
}"""
RESOURCES = """(since) => performance.getEntriesByType("resource")
  .filter((e) => e.startTime >= since)
  .map((e) => ({
    name: e.name, start: e.startTime, requestStart: e.requestStart, responseStart: e.responseStart,
    end: e.responseEnd, bytes: e.encodedBodySize, transferred: e.transferSize,
  }))"""
CHART_POINTS = "(charts) => charts.map((c) => Number(c.dataset.points))"


# --- seeding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededTenant:
    """One tenant of the bench: its key, its jobs and its job with a metric history."""

    label: str
    key: str
    jobs: int
    metrics_job: uuid.UUID
    metric_rows: int
    steps: int


def templates() -> list[dict[str, Any]]:
    """The job templates, each repeated by its weight: type, queue, params as submit stores them, total units."""
    out = []
    for job_type, weight, raw in TEMPLATES:
        spec = JOB_TYPES[job_type]
        params = spec.params.model_validate(raw)
        entry = {"type": job_type, "queue": spec.queue, "params": params.model_dump(mode="json"),
                 "total": spec.total_units(params)}  # fmt: skip
        out += [entry] * weight
    return out


# One statement for a tenant's jobs. Older jobs come first (i = 1 is the oldest); the newest are still queued or
# running. Each row draws a template and its fate from random(), seeded per run.
INSERT_JOBS = """
WITH g AS MATERIALIZED (
    SELECT i,
           CAST(:templates AS jsonb) -> floor(random() * :k)::int AS tpl,
           random() AS u, random() AS fate, random() AS warn,
           CAST(:now AS timestamptz) - (:n - i) * make_interval(secs => :spacing) AS created
    FROM generate_series(1, :n) AS i
), s AS (
    SELECT g.*, tpl->>'type' AS type, (tpl->>'total')::int AS total,
           CASE WHEN i > :n - :queued THEN 'queued'
                WHEN i > :n - :queued - :running THEN 'running'
                WHEN fate < :succeeded THEN 'succeeded'
                WHEN fate < :failed THEN 'failed'
                ELSE 'cancelled' END AS state,
           CASE WHEN tpl->>'type' = 'style.transfer' THEN 4 + 16 * u ELSE 30 + 170 * u END AS rate
    FROM g
), p AS (
    SELECT s.*,
           CASE state WHEN 'queued' THEN 0 WHEN 'succeeded' THEN total
                ELSE greatest(1, floor(total * (0.05 + 0.9 * u)))::int END AS step,
           created + make_interval(secs => 0.5 + 3 * u) AS started,
           NULLIF((tpl->'params'->>'checkpoint_every')::int, 0) AS every
    FROM s
)
INSERT INTO jobs (
    id, tenant_id, type, params, queue, state, attempt, max_attempts, lease_owner, cancel_requested,
    progress_step, progress_total, steps_per_s, latest_metrics, warnings, error_code, error_message,
    checkpoint_step, event_seq, enqueued_at, created_at, started_at, finished_at, updated_at
)
SELECT gen_random_uuid(), :tenant, type, jsonb_set(tpl->'params', '{seed}', to_jsonb(i)), tpl->>'queue', state,
       CASE WHEN state = 'queued' THEN 0 ELSE 1 END, 3,
       CASE WHEN state <> 'queued' THEN format('atelier-gpu-%s@gpu-node-%s', i % 4, i % 3) END,
       state = 'cancelled',
       step, total, CASE WHEN state <> 'queued' THEN rate END,
       CASE WHEN state = 'queued' OR type = 'gan.sample' THEN '{}'::jsonb
            WHEN type = 'style.transfer' THEN jsonb_build_object(
                'total_loss', 2e4 * (0.2 + random()), 'content_loss', 8 * (0.5 + random()),
                'style_loss', 2e4 * (0.2 + random()), 'tv_loss', 0.5 + random())
            ELSE jsonb_build_object(
                'd_loss', 0.3 + 0.9 * random(), 'g_loss', 0.8 + 2.5 * random(), 'd_real', 0.4 + 0.5 * random(),
                'd_fake', 0.1 + 0.4 * random(), 'grad_norm_d', 0.2 + 3 * random(), 'grad_norm_g', 0.5 + 5 * random(),
                'lr_d', 2e-4, 'lr_g', 2e-4, 'd_skips', floor(step * 0.05 * random())) END,
       CASE WHEN type = 'gan.train' AND state <> 'queued' AND warn < :warned THEN jsonb_build_array(format(
           'D has won: its loss stayed below 0.05 from step %s to step %s; G gets little signal. Try a lower lr_d, '
           'd_skip_threshold, label_smoothing or the stable preset', step / 2, step)) ELSE '[]'::jsonb END,
       CASE WHEN state <> 'failed' THEN NULL WHEN type = 'gan.train' THEN 'diverged'
            WHEN type = 'style.transfer' THEN 'too_large' ELSE 'missing_input' END,
       CASE WHEN state <> 'failed' THEN NULL
            WHEN type = 'gan.train' THEN format('d_loss is not finite (nan) at step %s; try a lower learning rate '
                                                'or the stable preset', step)
            WHEN type = 'style.transfer' THEN 'the output needs more memory than this worker has; try a smaller size'
            ELSE 'the source job has no generator weights' END,
       CASE WHEN state <> 'queued' AND step >= every THEN step / every * every END,
       CASE state WHEN 'queued' THEN 0 WHEN 'running' THEN 1 ELSE 3 END,
       created + interval '25 milliseconds', created,
       CASE WHEN state <> 'queued' THEN started END,
       CASE WHEN state NOT IN ('queued', 'running')
            THEN least(started + make_interval(secs => step / rate), CAST(:now AS timestamptz)) END,
       CASE WHEN state = 'queued' THEN created ELSE started END
FROM p
"""

# The event log of every job of a tenant, as the runner writes it: the first start, then the end and done.
INSERT_EVENTS = """
INSERT INTO job_events (job_id, seq, type, data, created_at)
SELECT j.id, e.seq, e.type, e.data || jsonb_build_object('ts', extract(epoch FROM e.at)), e.at
FROM jobs AS j
CROSS JOIN LATERAL (
    SELECT CASE WHEN j.error_code IS NULL THEN 'null'::jsonb
                ELSE jsonb_build_object('code', j.error_code, 'message', j.error_message) END AS error
) AS err
CROSS JOIN LATERAL (VALUES
    (1, 'state', jsonb_build_object('state', 'running', 'attempt', 1, 'error', NULL, 'first', true), j.started_at),
    (2, 'state', jsonb_build_object('state', j.state, 'attempt', 1, 'error', err.error), j.finished_at),
    (3, 'done', jsonb_build_object('state', j.state, 'error', err.error), j.finished_at)
) AS e(seq, type, data, at)
WHERE j.tenant_id = :tenant AND e.seq <= j.event_seq
"""

# Training curves, step 1..steps: losses that settle with noise, D's outputs drifting to 0.5, gradient norms that
# spike early, linearly decaying learning rates, and D's skipped steps counted up.
INSERT_METRICS = """
INSERT INTO metrics (job_id, name, step, value, attempt, recorded_at)
SELECT :job, m.name, s.step,
       CASE m.name
           WHEN 'd_loss' THEN 0.55 + 0.8 * exp(-x / 0.04) + 0.08 * sin(x * 60) + 0.25 * (random() - 0.5)
           WHEN 'g_loss' THEN 0.9 + 1.6 * (1 - exp(-x / 0.06)) - 0.5 * x + 0.6 * (random() - 0.5)
           WHEN 'd_real' THEN 0.55 + 0.35 * exp(-x / 0.05) + 0.12 * (random() - 0.5)
           WHEN 'd_fake' THEN 0.42 - 0.3 * exp(-x / 0.05) + 0.12 * (random() - 0.5)
           WHEN 'grad_norm_d' THEN 0.4 + 6 * exp(-x / 0.02) + 0.8 * random() ^ 4
           WHEN 'grad_norm_g' THEN 1.2 + 3 * exp(-x / 0.08) + 2.5 * random() ^ 6
           WHEN 'lr_d' THEN 2e-4 * (1 - x)
           WHEN 'lr_g' THEN 2e-4 * (1 - x)
           ELSE floor(0.03 * s.step * (1 - exp(-x / 0.1)))
       END,
       1, CAST(:started AS timestamptz) + make_interval(secs => s.step / CAST(:rate AS float8))
FROM unnest(CAST(:names AS text[])) AS m(name)
CROSS JOIN generate_series(1, :steps) AS s(step)
CROSS JOIN LATERAL (SELECT s.step / CAST(:steps AS float8) AS x) AS p
"""

COUNT_SEEDED = (
    "SELECT (SELECT count(*) FROM jobs WHERE tenant_id = :tenant), (SELECT count(*) FROM metrics WHERE job_id = :job)"
)

LATEST_METRICS = """
UPDATE jobs SET latest_metrics = (
    SELECT jsonb_object_agg(name, value) FROM metrics WHERE job_id = :job AND step = :steps
) WHERE id = :job
"""


def seed_tenant(
    sessions: sessionmaker[Session], *, label: str, jobs: int, metric_rows: int, now: datetime
) -> SeededTenant:
    """A tenant with ``jobs`` jobs, one of them a succeeded gan.train with ``metric_rows`` (rounded up) metric rows."""
    steps = math.ceil(metric_rows / len(SERIES))
    with transaction(sessions) as session:
        tenant = queries.create_tenant(session, name=f"ui-{label}-{uuid.uuid4().hex[:8]}")
        session.execute(update(Tenant).where(Tenant.id == tenant.id).values(max_active_jobs=jobs))
        _row, key = queries.create_api_key(session, tenant_id=tenant.id, label="bench-ui")
        session.execute(text("SELECT setseed(:seed)"), {"seed": RANDOM_SEED})
        pool = templates()
        session.execute(
            text(INSERT_JOBS),
            {
                "tenant": tenant.id, "templates": json.dumps(pool), "k": len(pool), "n": jobs - 1, "now": now,
                "spacing": JOB_SPACING_S, "queued": QUEUED_JOBS, "running": RUNNING_JOBS,
                "succeeded": SUCCEEDED_SHARE, "failed": FAILED_SHARE, "warned": WARNED_SHARE,
            },
        )  # fmt: skip
        job = add_metrics_job(session, tenant_id=tenant.id, steps=steps, now=now)
        job_id = job.id
        session.execute(text(INSERT_EVENTS), {"tenant": tenant.id})
        session.execute(
            text(INSERT_METRICS),
            {"job": job_id, "names": list(SERIES), "steps": steps, "started": job.started_at, "rate": METRICS_JOB_RATE},
        )
        session.execute(text(LATEST_METRICS), {"job": job_id, "steps": steps})
        counted = session.execute(text(COUNT_SEEDED), {"tenant": tenant.id, "job": job_id}).one()
    if tuple(counted) != (jobs, steps * len(SERIES)):
        raise BenchError(f"seeded {tuple(counted)} (jobs, metric rows), expected {(jobs, steps * len(SERIES))}")
    return SeededTenant(label, key, jobs, job_id, steps * len(SERIES), steps)


def add_metrics_job(session: Session, *, tenant_id: uuid.UUID, steps: int, now: datetime) -> Job:
    """The tenant's succeeded gan.train whose charts are measured, finished just before ``now``."""
    spec = JOB_TYPES["gan.train"]
    params = spec.params.model_validate({**METRICS_JOB_PARAMS, "steps": steps})
    finished = now - timedelta(seconds=METRICS_JOB_FINISHED_S)
    started = finished - timedelta(seconds=steps / METRICS_JOB_RATE)
    created = started - timedelta(seconds=1)
    job = Job(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        type=spec.name,
        params=params.model_dump(mode="json"),
        queue=QUEUE_GPU,
        state=JobState.SUCCEEDED.value,
        attempt=1,
        max_attempts=3,
        lease_owner="atelier-gpu-0@gpu-node-0",
        progress_step=steps,
        progress_total=steps,
        steps_per_s=METRICS_JOB_RATE,
        checkpoint_step=steps,
        event_seq=3,
        enqueued_at=created,
        created_at=created,
        started_at=started,
        finished_at=finished,
    )
    session.add(job)
    session.flush()
    return job


def analyze(sessions: sessionmaker[Session]) -> None:
    """Planner statistics for the seeded tables, as autovacuum's analyze would have them."""
    with sessions() as session:
        session.execute(text("ANALYZE jobs, job_events, metrics"))
        session.commit()


# --- the browser ----------------------------------------------------------------------------------


def launch_browser(playwright: Playwright) -> tuple[Browser, str]:
    """Headless Chromium through tests/support/browser.py when it is there, else with the same flags; and its path."""
    try:
        from tests.support.browser import chromium_executable, launch
    except (ImportError, SyntaxError):  # the helper is missing, or caught mid-edit
        return (
            playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True, timeout=LAUNCH_TIMEOUT_MS
            ),
            str(CHROMIUM),
        )
    return launch(playwright, timeout=LAUNCH_TIMEOUT_MS), str(chromium_executable())


def _driver_pids() -> set[int]:
    found = set()
    for child in children_by_parent().get(os.getpid(), []):
        with contextlib.suppress(OSError):
            if DRIVER_ARG in (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0"):
                found.add(child)
    return found


class Watchdog:
    """Deadlines on browser work. Past one, the Playwright drivers this bench started and every process below them
    (Chromium) are killed, so the pending call fails instead of blocking: ``page.evaluate`` and ``close`` have no
    timeout of their own."""

    def __init__(self) -> None:
        self._before = _driver_pids()
        self.killed: list[int] = []

    @contextlib.contextmanager
    def deadline(self, seconds: float, what: str) -> Iterator[None]:
        """Run the block; kill the browser if it is still running after ``seconds``."""
        timer = threading.Timer(seconds, self.kill)
        timer.daemon = True
        timer.start()
        try:
            yield
        except PlaywrightError as exc:
            if self.killed:
                raise BenchError(f"{what}: past its {seconds:.0f} s deadline; killed the browser") from exc
            raise
        finally:
            timer.cancel()

    def kill(self) -> None:
        """SIGKILL the new drivers and their descendants, then reap the drivers."""
        tree = children_by_parent()
        drivers = _driver_pids() - self._before
        for driver in drivers:
            pending, below = list(tree.get(driver, [])), []
            while pending:
                pid = pending.pop()
                below.append(pid)
                pending.extend(tree.get(pid, []))
            for pid in [*below, driver]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
        for driver in drivers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(driver, 0)


def open_browser(stack: contextlib.ExitStack, watchdog: Watchdog) -> tuple[Browser, str]:
    """Start Playwright and Chromium, closing both (within CLOSE_DEADLINE_S, else killed) when ``stack`` closes."""
    manager = sync_playwright()

    def stop() -> None:
        with contextlib.suppress(Exception), watchdog.deadline(CLOSE_DEADLINE_S, "closing the browser"):
            manager.__exit__(None, None, None)

    with watchdog.deadline(LAUNCH_DEADLINE_S, "starting the browser"):
        playwright = manager.start()
        stack.callback(stop)
        browser, path = launch_browser(playwright)
    stack.callback(lambda: _close(browser.close, watchdog))
    return browser, path


def _close(close: Callable[[], object], watchdog: Watchdog) -> None:
    with contextlib.suppress(Exception), watchdog.deadline(CLOSE_DEADLINE_S, "closing"):
        close()


# --- measuring --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One request of a page, from the browser's resource timing, in ms after the view's start."""

    path: str  # path and query
    start: float  # fetch start
    sent: float  # request sent (after any connection setup)
    first_byte: float
    end: float
    size: int  # body bytes (encoded; a revalidated file's cached body)
    transferred: int  # bytes on the wire: headers and body; about 300 for a 304 revalidation

    @property
    def ttfb(self) -> float:
        """Request sent -> first byte: the server's work, on loopback."""
        return self.first_byte - self.sent


@dataclass(frozen=True)
class ViewLoad:
    """One view shown once, on the page's clock: ms since navigation start, or since the hash change (in-app)."""

    ready_ms: float  # the view's atelier:* mark
    api: Resource  # its main API request: the page of jobs, or the metrics
    drawn: int  # table rows, or chart points
    charts: tuple[int, ...]  # points per chart (the job view)
    resources: tuple[Resource, ...]  # every request since the view's start, in start order

    @property
    def render_ms(self) -> float:
        """From the API's response end to the mark: parsing, building the DOM or drawing the charts."""
        return self.ready_ms - self.api.end


@dataclass
class PageLog:
    """What a page did that a clean page never does: uncaught errors and console errors."""

    problems: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        """Record ``page``'s uncaught exceptions and console errors."""
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)


def wait_for_mark(page: Page, name: str, *, since: float, log: PageLog) -> float:
    """The startTime of the first ``name`` mark at or after ``since`` (page clock), polled until READY_TIMEOUT_S."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        found = page.evaluate(MARK_SINCE, [name, since])
        if found is not None:
            return float(found)
        if time.monotonic() > deadline:
            shown = page.locator("main").inner_text(timeout=NAVIGATION_TIMEOUT_MS)[:300]
            raise BenchError(
                f"no {name} mark within {READY_TIMEOUT_S:.0f} s at {page.url}; the page shows {shown!r}; "
                f"its errors: {log.problems[-5:]}"
            )
        page.wait_for_timeout(POLL_S * MS)


@dataclass(frozen=True)
class View:
    """A dashboard view as the bench sees it: its route, the mark it sets when ready, its main API request."""

    name: str
    route: str
    mark: str
    request: str
    charts: bool  # counts chart points (else table rows)


def views_of(tenant: SeededTenant) -> tuple[View, View]:
    """The jobs page and the metrics job's page, for ``tenant``."""
    return (
        View(JOBS_VIEW, JOBS_ROUTE, JOBS_READY, JOBS_REQUEST, charts=False),
        View(
            JOB_VIEW,
            JOB_ROUTE.format(job_id=tenant.metrics_job),
            CHARTS_READY,
            METRICS_REQUEST.format(job_id=tenant.metrics_job),
            charts=True,
        ),
    )


def read_view(page: Page, view: View, *, since: float, log: PageLog) -> ViewLoad:
    """Wait for the view's mark, then read its requests' timing and what it drew."""
    ready = wait_for_mark(page, view.mark, since=since, log=log)
    resources = tuple(
        Resource(
            path=urlunsplit(("", "", *urlsplit(e["name"])[2:4], "")),
            start=e["start"] - since,
            sent=e["requestStart"] - since,
            first_byte=e["responseStart"] - since,
            end=e["end"] - since,
            size=int(e["bytes"]),
            transferred=int(e["transferred"]),
        )
        for e in sorted(page.evaluate(RESOURCES, since), key=lambda e: e["start"])
    )
    api = next((r for r in resources if r.path.startswith(view.request)), None)
    if api is None:
        raise BenchError(f"no {view.request} request in the resource timing of {page.url}")
    if view.charts:
        points = tuple(int(n) for n in page.locator(CHART_SELECTOR).evaluate_all(CHART_POINTS))
        drawn = sum(points)
    else:
        points, drawn = (), page.locator(ROW_SELECTOR).count()
    return ViewLoad(ready_ms=ready - since, api=api, drawn=drawn, charts=points, resources=resources)


JOBS_VIEW = "jobs page"
JOB_VIEW = "charts"
LOAD = "page load"
IN_APP = "in-app"


@dataclass(frozen=True)
class Case:
    """One row of the results: a view, how it was reached, and the tenant."""

    view: str
    how: str
    tenant: str


def measure_tenant(
    context: BrowserContext, tenant: SeededTenant, watchdog: Watchdog, log: PageLog
) -> dict[Case, ViewLoad]:
    """Two fresh pages: the jobs page, then in-app to the job; the job page, then in-app to the jobs page."""
    jobs, job = views_of(tenant)
    out: dict[Case, ViewLoad] = {}
    for first, second in ((jobs, job), (job, jobs)):
        with watchdog.deadline(PAGE_DEADLINE_S, f"{tenant.label}: {first.name} then {second.name}"):
            page = context.new_page()
            log.watch(page)
            try:
                page.goto(f"/{first.route}", wait_until="domcontentloaded", timeout=NAVIGATION_TIMEOUT_MS)
                out[Case(first.name, LOAD, tenant.label)] = read_view(page, first, since=0.0, log=log)
                t0 = float(page.evaluate(SET_HASH, second.route))
                out[Case(second.name, IN_APP, tenant.label)] = read_view(page, second, since=t0, log=log)
            finally:
                page.close()
    return out


def new_context(browser: Browser, base_url: str, key: str) -> BrowserContext:
    """A context whose pages start signed in: the key is in sessionStorage before the page's scripts run."""
    context = browser.new_context(base_url=base_url, viewport=VIEWPORT)  # type: ignore[arg-type]
    context.set_default_timeout(NAVIGATION_TIMEOUT_MS)
    context.add_init_script(f"sessionStorage.setItem({json.dumps(KEY_STORAGE)}, {json.dumps(key)})")
    return context


def measure(
    browser: Browser, base_url: str, tenants: Sequence[SeededTenant], watchdog: Watchdog, *, repeats: int, warmup: int
) -> tuple[dict[Case, list[ViewLoad]], PageLog]:
    """``warmup`` + ``repeats`` repetitions over every tenant, the order alternating; the counted loads per case."""
    log = PageLog()
    results: dict[Case, list[ViewLoad]] = {}
    contexts = {t.label: new_context(browser, base_url, t.key) for t in tenants}
    try:
        for rep in range(warmup + repeats):
            order = tenants if rep % 2 == 0 else list(reversed(tenants))
            seen: dict[Case, ViewLoad] = {}
            for tenant in order:
                seen.update(measure_tenant(contexts[tenant.label], tenant, watchdog, log))
            if rep >= warmup:
                for case, load in seen.items():
                    results.setdefault(case, []).append(load)
            counted = "warm-up" if rep < warmup else f"{rep - warmup + 1}/{repeats}"
            loads = ", ".join(f"{c.view} {c.tenant} {v.ready_ms:.0f}" for c, v in seen.items() if c.how == LOAD)
            print(
                f"  repetition {counted} ({' then '.join(t.label for t in order)}), page loads in ms: {loads}",
                flush=True,
            )
    finally:
        for context in contexts.values():
            _close(context.close, watchdog)
    return results, log


# --- report -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A target against a median."""

    label: str
    median_ms: float
    ratio: float

    @property
    def ok(self) -> bool:
        """Under the target."""
        return self.median_ms < TARGET_MS

    def line(self) -> str:
        """e.g. ``jobs page interactive, 10,000 jobs: median 420 ms (target < 1000 ms), 1.05x the reference, PASS``."""
        return (
            f"{self.label}: median {self.median_ms:.0f} ms (target < {TARGET_MS:.0f} ms), "
            f"{self.ratio:.2f}x the reference, {'PASS' if self.ok else 'FAIL'}"
        )


def ready_median(loads: Sequence[ViewLoad]) -> float:
    """The median time to the view's mark."""
    return median([v.ready_ms for v in loads])


def print_table(results: dict[Case, list[ViewLoad]], reference: SeededTenant, large: SeededTenant) -> None:
    """One line per case: the mark's median and p90, the ratio to the reference, and the main request's timing."""
    print("ms on the page's clock, medians unless marked; ratio: this tenant's median / the reference tenant's")
    print(
        f"{'view':<10} {'reached by':<10} {'tenant':<12} {'n':>2} {'ready':>6} {'p90':>6} {'ratio':>6} "
        f"{'API start':>9} {'TTFB':>6} {'API end':>7} {'render':>6} {'KiB':>6} {'drawn':>6}"
    )
    for view in (JOBS_VIEW, JOB_VIEW):
        for how in (LOAD, IN_APP):
            base = ready_median(results[Case(view, how, reference.label)])
            for tenant in (reference, large):
                loads = results[Case(view, how, tenant.label)]
                ready = [v.ready_ms for v in loads]

                print(
                    f"{view:<10} {how:<10} {tenant.label:<12} {len(loads):>2} {median(ready):>6.0f} "
                    f"{percentile(ready, 0.9):>6.0f} {median(ready) / base:>6.2f} "
                    f"{median([v.api.start for v in loads]):>9.0f} {median([v.api.ttfb for v in loads]):>6.0f} "
                    f"{median([v.api.end for v in loads]):>7.0f} {median([v.render_ms for v in loads]):>6.0f} "
                    f"{median([v.api.size / 1024 for v in loads]):>6.1f} {median([float(v.drawn) for v in loads]):>6.0f}"
                )
    print(
        "  API: the view's main request (GET /v1/jobs, or GET .../metrics); start: when it began (the page's boot, "
        "and for the charts the GET of the job before it); TTFB: request sent -> first byte, the server's work; "
        "end: response read; render: response end -> the mark; drawn: table rows or chart points"
    )
    for tenant in (reference, large):
        sample = results[Case(JOB_VIEW, LOAD, tenant.label)][0]
        print(
            f"{tenant.label}: the job has {tenant.metric_rows:,} metric rows ({len(SERIES)} series x {tenant.steps:,} "
            f"steps); {sample.api.path.rsplit('/', 1)[-1]} gave {sample.api.size / 1024:.0f} KiB and the page drew "
            f"{sample.drawn:,} points in {len(sample.charts)} charts {list(sample.charts)}"
        )


def print_waterfall(label: str, load: ViewLoad) -> None:
    """Every request of one load, in start order: where the time to the mark went."""
    print(
        f"waterfall, {label} (ready at {load.ready_ms:.0f} ms): start, sent, first byte, end (ms), body KiB, "
        "bytes on the wire, request"
    )
    for r in load.resources:
        if r.start <= load.ready_ms:
            print(
                f"  {r.start:6.0f} {r.sent:6.0f} {r.first_byte:6.0f} {r.end:6.0f} {r.size / 1024:7.1f} "
                f"{r.transferred:>8}  {r.path}"
            )


def report(
    results: dict[Case, list[ViewLoad]], reference: SeededTenant, large: SeededTenant, *, waterfall: bool
) -> list[Verdict]:
    """Print the table (and the waterfalls); return the verdicts of the two targets."""
    print_table(results, reference, large)
    verdicts = []
    for view, label in ((JOBS_VIEW, f"jobs page interactive, {large.label}"),
                        (JOB_VIEW, f"charts drawn, {large.label} ({large.metric_rows:,} metric rows)")):  # fmt: skip
        loads = results[Case(view, LOAD, large.label)]
        big = ready_median(loads)
        verdicts.append(Verdict(label, big, big / ready_median(results[Case(view, LOAD, reference.label)])))
        if waterfall:
            typical = min(loads, key=lambda v: abs(v.ready_ms - big))
            print_waterfall(f"{view}, {LOAD}, {large.label}, the load nearest the median", typical)
    return verdicts


# --- main ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; the defaults are what docs/benchmarks.md reports."""
    parser = argparse.ArgumentParser(prog="python -m bench.ui_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="counted repetitions (fresh pages each)")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="repetitions before those, not counted")
    parser.add_argument("--jobs", type=int, default=JOBS, help="jobs of the large tenant")
    parser.add_argument("--reference-jobs", type=int, default=REFERENCE_JOBS, help="jobs of the reference tenant")
    parser.add_argument("--metric-rows", type=int, default=METRIC_ROWS, help="metric rows of the large tenant's job")
    parser.add_argument(
        "--reference-metric-rows", type=int, default=REFERENCE_METRIC_ROWS, help="metric rows of the reference job"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--waterfall", action="store_true", help="print every request of a typical large-tenant page load of each view"
    )
    args = parser.parse_args(argv)
    minimum = QUEUED_JOBS + RUNNING_JOBS + 1  # and the metrics job
    if min(args.jobs, args.reference_jobs) < minimum or args.jobs == args.reference_jobs:
        parser.error(f"--jobs and --reference-jobs must differ and be at least {minimum}")
    if min(args.metric_rows, args.reference_metric_rows, args.repeats) < 1 or args.warmup < 0:
        parser.error("--metric-rows, --reference-metric-rows and --repeats must be at least 1, --warmup at least 0")
    return args


def run(args: argparse.Namespace, stack: contextlib.ExitStack) -> list[Verdict]:
    """Set everything up (registering its cleanup on ``stack``), measure, report; returns the verdicts."""
    env = bench_env(stack, prefix="atelier-bench-ui-")
    now = datetime.now(UTC)
    started = time.perf_counter()
    reference = seed_tenant(
        env.sessions, label=f"{args.reference_jobs:,} jobs", jobs=args.reference_jobs,
        metric_rows=args.reference_metric_rows, now=now,
    )  # fmt: skip
    large = seed_tenant(
        env.sessions, label=f"{args.jobs:,} jobs", jobs=args.jobs, metric_rows=args.metric_rows, now=now
    )
    analyze(env.sessions)
    print(
        f"seeded in {time.perf_counter() - started:.1f} s: {reference.label} (job with {reference.metric_rows:,} "
        f"metric rows) and {large.label} (job with {large.metric_rows:,})",
        flush=True,
    )

    port = services.free_port()
    api = api_server(env.settings, env.log_dir, port, name="api")
    stack.callback(api.stop)
    api.start()
    try:
        wait_until_serving(api, port, "/healthz")
        watchdog = Watchdog()
        browser, path = open_browser(stack, watchdog)
        print(
            f"Chromium {browser.version} ({path}), headless, {VIEWPORT['width']}x{VIEWPORT['height']}; "
            f"{args.warmup} warm-up + {args.repeats} repetitions, a fresh page per load",
            flush=True,
        )
        results, log = measure(
            browser, f"http://{HOST}:{port}", [reference, large], watchdog, repeats=args.repeats, warmup=args.warmup
        )
    except Exception:
        print(f"--- {api.name} log (tail) ---\n{api.log()[-LOG_TAIL_CHARS:]}", file=sys.stderr)
        raise
    verdicts = report(results, reference, large, waterfall=args.waterfall)
    if log.problems:
        print(f"the pages reported {len(log.problems)} problems, e.g. {log.problems[:3]}")
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; cleans up the browser, the API, the database and the Redis db on any exit."""
    args = parse_args(argv)
    outcome = guarded_run(lambda stack: run(args, stack), header=f"load average {os.getloadavg()[0]:.1f}, ")
    if isinstance(outcome, int):
        return outcome
    verdicts, seconds = outcome
    print(f"total {seconds:.0f} s, load average {os.getloadavg()[0]:.2f}")
    print("; ".join(v.line() for v in verdicts))
    return 1 if args.strict and not all(v.ok for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
