"""A device running out of memory inside a job, as the error the user can act on: ``too_large``.

The executors (workers/engines.py) run every library call under ``too_large_on_oom``; the GPU
check (bench/gpu_check.py) drives the same function into a real CUDA OOM. Pure: no database,
storage or Celery import, so it runs where only torch is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from shared.errors import JobFailed

TOO_LARGE = "too_large"


@contextmanager
def too_large_on_oom(device: torch.device, *, what: str, remedy: str) -> Iterator[None]:
    """Turn ``torch.OutOfMemoryError`` raised inside the block into JobFailed(code="too_large").

    The message reads "out of <device> memory <what> (<torch's message>); <remedy>".
    """
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise JobFailed(f"out of {device.type} memory {what} ({exc}); {remedy}", code=TOO_LARGE) from exc
