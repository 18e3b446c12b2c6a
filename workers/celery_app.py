"""Worker and beat entry point: ``celery -A workers.celery_app worker|beat``.

Settings are built here, once, from the environment. The parent process never imports
torch or initialises CUDA; each child builds its own connections after the fork. OpenMP's
wait policy (workers/threads.py, OPENMP_ENV) is put in the environment here, before any
process imports torch, unless the operator set it. PROMETHEUS_MULTIPROC_DIR is set here too,
before the pool forks (workers/metrics.py); the parent serves the pool's metrics when
ATELIER_WORKER_METRICS_PORT is set.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import (
    celeryd_after_setup,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from shared.config import Settings
from shared.queue import make_celery
from workers.metrics import multiprocess_dir, process_gone, reset_multiprocess_dir, serve
from workers.presence import Presence
from workers.tasks import register_tasks, worker_context
from workers.threads import apply_worker_threads, openmp_defaults

os.environ.update(openmp_defaults(os.environ))  # read by OpenMP when a child imports torch
METRICS_DIR = multiprocess_dir(os.environ)  # read by prometheus_client when a child first records a metric
settings = Settings()
app = make_celery(settings)
register_tasks(app, settings)
log = logging.getLogger(__name__)


class _Pool:
    """What the parent learns before forking, and each child's presence (workers/presence.py)."""

    queues: list[str] = []
    presence: Presence | None = None


@celeryd_after_setup.connect
def _remember_queues(sender: str, instance: Any, **_: Any) -> None:
    """In the parent, before the pool forks: the queues this worker consumes (its children advertise them)."""
    _Pool.queues = sorted(instance.app.amqp.queues.consume_from)


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """In each pool child: warm the engines and connections so the first job starts at once."""
    import workers.engines  # noqa: F401 - imports torch once, before the first job

    apply_worker_threads(settings)  # registers this child; every job start re-counts (workers/tasks.py)
    _Pool.presence = Presence(worker_context(), _Pool.queues).start()


@worker_init.connect
def _init_parent(**_: Any) -> None:
    """In the worker's parent, before the pool forks: start the metrics of this run from zero."""
    reset_multiprocess_dir(METRICS_DIR)


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """In the parent, once the pool is up (so no child inherits the listening socket): serve /metrics."""
    if settings.worker_metrics_port is not None:
        serve(settings.worker_metrics_port)


@worker_process_shutdown.connect
def _child_exits(pid: int, **_: Any) -> None:
    """In a pool process as it exits: drop its live gauges from the worker's sums, and its presence."""
    process_gone(pid)
    if _Pool.presence is not None:
        _Pool.presence.stop()
