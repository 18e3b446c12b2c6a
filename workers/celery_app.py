"""Worker and beat entry point: ``celery -A workers.celery_app worker|beat``.

Settings are built here, once, from the environment. The parent process never imports
torch or initialises CUDA; each child builds its own connections after the fork.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_process_init

from shared.config import Settings
from workers.queue import make_celery
from workers.tasks import register_tasks, worker_context

settings = Settings()
app = make_celery(settings)
register_tasks(app, settings)
log = logging.getLogger(__name__)


@worker_process_init.connect
def _init_child(**_: Any) -> None:
    """In each pool child: warm the engines and connections so the first job starts at once."""
    import torch

    import workers.engines  # noqa: F401 - imports torch once, before the first job

    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    worker_context()
