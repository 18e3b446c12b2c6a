"""A worker process advertises its device (workers/presence.py → the ``worker_presence`` table): what it is,
its total and free memory, and the queues it serves. It does so when its pool process starts and every
``heartbeat_s`` after, and removes itself as it exits, so the API can say "no gpu worker with 40 GiB free is
online" and the claim can take only jobs that fit (``capacity``).

Free memory is what a job may use: on CUDA the device's free memory plus what torch has cached but not in use
(``available_memory_bytes``), capped by ``device_memory_limit_bytes``; on the CPU the configured budget
(``device_memory_limit_bytes``, else ``worker_device_memory_bytes``, the figure admission checks jobs
against), so every admitted job fits a CPU worker and the host's momentary MemAvailable never strands one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """What a worker process offers a job."""

    name: str  # "cpu", or "cuda <device name>"
    total_bytes: int
    free_bytes: int


def probe(settings: Settings) -> Device:
    """This process's device and the memory a job may use on it now."""
    import torch

    from workers.engines import available_memory_bytes, pick_device

    device = pick_device(settings.device)
    limit = settings.device_memory_limit_bytes
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return Device(
            name=f"cuda {torch.cuda.get_device_name(device)}",
            total_bytes=min(total, limit) if limit is not None else total,
            free_bytes=available_memory_bytes(device, limit),
        )
    budget = limit if limit is not None else settings.worker_device_memory_bytes
    return Device(name="cpu", total_bytes=budget, free_bytes=budget)


def presence_name() -> str:
    """This pool process's row: one per process, whatever ATELIER_WORKER_NAME its siblings share."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Presence:
    """Keeps this process's worker_presence row fresh from a daemon thread."""

    def __init__(self, ctx: WorkerContext, queues: Sequence[str]) -> None:
        self._ctx = ctx
        self._queues = list(queues)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="presence", daemon=True)

    def start(self) -> Presence:
        """Advertise now, then every heartbeat."""
        self.advertise()
        self._thread.start()
        return self

    def advertise(self) -> Device | None:
        """Refresh the row; None (logged) when the database is away: the next beat tries again."""
        try:
            device = probe(self._ctx.settings)
            with transaction(self._ctx.sessions) as session:
                queries.advertise(
                    session,
                    owner=presence_name(),
                    queues=self._queues,
                    device=device.name,
                    total_bytes=device.total_bytes,
                    free_bytes=device.free_bytes,
                )
            return device
        except Exception as exc:
            log.warning("could not advertise this worker: %s", exc)
            return None

    def stop(self) -> None:
        """Stop refreshing and remove the row (best effort: a stale row ages out of 'online')."""
        self._stop.set()
        try:
            with transaction(self._ctx.sessions) as session:
                queries.forget_worker(session, owner=presence_name())
        except Exception as exc:
            log.warning("could not remove this worker's presence: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self._ctx.settings.heartbeat_s):
            self.advertise()
