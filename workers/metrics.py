"""Prometheus metrics of the training workers, in prometheus-client's multiprocess mode.

Jobs run in prefork pool processes, so each writes its metrics to memory-mapped files in
PROMETHEUS_MULTIPROC_DIR, and the Celery parent serves them all (MultiProcessCollector) on
``worker_metrics_port``. workers/celery_app.py sets the directory before prometheus_client is
imported and before the pool forks; it empties it when the worker starts and forgets a dead child's
live gauges. This module imports prometheus_client only when the first metric is used (in a pool
process, after the fork), so that importing it never fixes the value class too early.

Gauges use the ``livesum`` mode: a worker's steps/s, images/s and device memory are the sums over
its live pool processes (its throughput and its footprint), Prometheus sums workers the same way,
and a dead child's share disappears with it. Each job sets its gauges back to 0 when it ends, so an
idle child adds nothing. Device memory is CUDA's allocated bytes; on CPU it stays 0 (a process's
RSS is host memory, not device memory).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_DIR_PREFIX = "atelier-worker-metrics-"
GAUGE_MODE: Final = "livesum"
GAN_PREFIX = "gan."
BATCH_SIZE_PARAM = "batch_size"
# An attempt lasts from seconds (tests, samples) to a day (a long training run).
DURATION_BUCKETS_S = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    43200.0,
    86400.0,
)
UPLOAD_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def multiprocess_dir(environ: MutableMapping[str, str]) -> Path:
    """The metrics directory: PROMETHEUS_MULTIPROC_DIR, set here to a private temp dir when unset."""
    configured = environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
    else:
        path = Path(tempfile.gettempdir()) / f"{DEFAULT_DIR_PREFIX}{os.getpid()}"
        environ[MULTIPROC_ENV] = str(path)
        atexit.register(_remove_at_exit, path, os.getpid())
    path.mkdir(parents=True, exist_ok=True)
    return path


def _remove_at_exit(path: Path, owner: int) -> None:
    """Remove the default directory when the process that made it exits (never from a forked child)."""
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def reset_multiprocess_dir(path: Path) -> None:
    """Empty the directory: the files of an earlier run would add their counts to this one's."""
    for entry in path.glob("*.db"):
        entry.unlink(missing_ok=True)


def serve(port: int) -> None:
    """In the Celery parent: serve every pool process's metrics on ``port`` at /metrics."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(port, registry=registry)
    log.info("worker metrics on port %d", port)


def process_gone(pid: int) -> None:
    """A pool process exited: drop its live gauges (its counters and histograms still count)."""
    from prometheus_client import multiprocess

    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


class WorkerMetrics:
    """The metrics a pool process writes (built once per process, on first use)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()  # private: read directly in single-process tests
        reg = self.registry
        self.steps_per_s = Gauge(
            "atelier_worker_steps_per_second", "Training steps per second, by job type", ["type"],
            multiprocess_mode=GAUGE_MODE, registry=reg,
        )  # fmt: skip
        self.images_per_s = Gauge(
            "atelier_worker_images_per_second", "GAN images per second (steps/s x batch size), by job type", ["type"],
            multiprocess_mode=GAUGE_MODE, registry=reg,
        )  # fmt: skip
        self.device_memory = Gauge(
            "atelier_worker_device_memory_bytes", "CUDA memory allocated by the worker's jobs (0 on CPU)",
            multiprocess_mode=GAUGE_MODE, registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            "atelier_worker_job_duration_seconds", "Seconds from claim to the end of one attempt, by type and outcome",
            ["type", "outcome"], buckets=DURATION_BUCKETS_S, registry=reg,
        )  # fmt: skip
        self.upload = Histogram(
            "atelier_worker_checkpoint_upload_seconds", "Seconds to upload one checkpoint, by job type", ["type"],
            buckets=UPLOAD_BUCKETS_S, registry=reg,
        )  # fmt: skip
        self.attempts = Counter(
            "atelier_worker_attempts_started", "Attempts claimed and started, by job type", ["type"], registry=reg
        )
        self.handbacks = Counter(
            "atelier_worker_handbacks", "Attempts that handed their job back to the queue, by job type", ["type"],
            registry=reg,
        )  # fmt: skip


class _Metrics:
    built: WorkerMetrics | None = None


def worker_metrics() -> WorkerMetrics:
    """This process's metrics."""
    if _Metrics.built is None:
        _Metrics.built = WorkerMetrics()
    return _Metrics.built


def device_memory_bytes() -> int | None:
    """CUDA memory allocated by this process, or None when it has not used CUDA (never imports torch)."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.memory_allocated())


class JobMeter:
    """One attempt's metrics; a metrics failure is logged, never raised into the job."""

    def __init__(self, job_type: str, params: dict[str, Any]) -> None:
        self.job_type = job_type
        batch = params.get(BATCH_SIZE_PARAM)
        self.batch_size = batch if job_type.startswith(GAN_PREFIX) and isinstance(batch, int) else None

    def attempt_started(self) -> None:
        """The claim succeeded."""
        self._safely(lambda m: m.attempts.labels(self.job_type).inc())

    def rate(self, steps_per_s: float | None) -> None:
        """The current smoothed rate (at each heartbeat), and the device memory in use."""

        def record(m: WorkerMetrics) -> None:
            m.steps_per_s.labels(self.job_type).set(steps_per_s or 0.0)
            if self.batch_size is not None:
                m.images_per_s.labels(self.job_type).set((steps_per_s or 0.0) * self.batch_size)
            allocated = device_memory_bytes()
            if allocated is not None:
                m.device_memory.set(allocated)

        self._safely(record)

    def checkpoint_uploaded(self, seconds: float) -> None:
        """One checkpoint reached the object store."""
        self._safely(lambda m: m.upload.labels(self.job_type).observe(seconds))

    def handed_back(self) -> None:
        """The attempt put its job back in the queue."""
        self._safely(lambda m: m.handbacks.labels(self.job_type).inc())

    def finished(self, outcome: str, seconds: float) -> None:
        """The attempt ended with ``outcome``: observe its duration; this process trains nothing now."""
        self.rate(None)
        self._safely(lambda m: m.duration.labels(self.job_type, outcome).observe(seconds))

    def _safely(self, record: Callable[[WorkerMetrics], None]) -> None:
        try:
            record(worker_metrics())
        except Exception as exc:  # a full disk or a removed directory must not fail a job
            log.warning("metrics not recorded: %s", exc)
