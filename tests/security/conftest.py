"""Fixtures for the security tests: the API on a real uvicorn server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from services.api.app import create_app
from shared.config import Settings
from tests.support import services

SERVER_START_TIMEOUT_S = 30.0


@contextmanager
def live_server(settings: Settings) -> Iterator[tuple[str, int]]:
    """The API on uvicorn in a thread, on a free loopback port; yields (host, port)."""
    port = services.free_port()
    instance = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        instance.should_exit = True
        thread.join(SERVER_START_TIMEOUT_S)
