"""Fixtures for the security tests: the API on a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from shared.config import Settings
from tests.support.edge_server import HOST, uvicorn_in_thread


@contextmanager
def live_server(settings: Settings) -> Iterator[tuple[str, int]]:
    """The API on uvicorn in a thread, on a free loopback port; yields (host, port)."""
    with uvicorn_in_thread(settings) as port:
        yield HOST, port
