"""Worker and beat entry point: ``celery -A workers.celery_app worker|beat``.

Settings are built here, once, from the environment. The parent process never imports
torch or initialises CUDA; each child builds its own connections after the fork. OpenMP's
wait policy (workers/threads.py, OPENMP_ENV) is put in the environment here, before any
process imports torch, unless the operator set it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_init

from shared.config import Settings
from shared.queue import make_celery
from workers.tasks import register_tasks, worker_context
from workers.threads import apply_worker_threads, openmp_defaults

os.environ.update(openmp_defaults(os.environ))  # read by OpenMP when a child imports torch
settings = Settings()
app = make_celery(settings)
register_tasks(app, settings)
log = logging.getLogger(__name__)


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """In each pool child: warm the engines and connections so the first job starts at once."""
    import workers.engines  # noqa: F401 - imports torch once, before the first job

    apply_worker_threads(settings)  # registers this child; every job start re-counts (workers/tasks.py)
    worker_context()
