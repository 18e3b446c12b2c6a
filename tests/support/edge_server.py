"""The API on a real uvicorn server in a thread, behind services/api/edge.py's EdgeProtocol (or
uvicorn's plain protocol, to show what the edge changes), with raw-socket helpers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from services.api.app import create_app
from services.api.edge import EdgeLimits, EdgeProtocol
from shared.config import Settings
from tests.support import services

SERVER_START_TIMEOUT_S = 30.0
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    """A running server: its port, and its EdgeProtocol class (None: uvicorn's own protocol)."""

    port: int
    protocol: type[EdgeProtocol] | None

    @property
    def url(self) -> str:
        """Its base URL."""
        return f"http://{HOST}:{self.port}"


@contextmanager
def uvicorn_in_thread(settings: Settings, *, http: type[asyncio.Protocol] | str = "auto") -> Iterator[int]:
    """The API on uvicorn in a thread on a free loopback port (its HTTP protocol ``http``); yields the port."""
    port = services.free_port()
    config = uvicorn.Config(create_app(settings), host=HOST, port=port, http=http, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        instance.should_exit = True
        thread.join(SERVER_START_TIMEOUT_S)


@contextmanager
def edge_server(settings: Settings, limits: EdgeLimits | None) -> Iterator[Server]:
    """uvicorn on a free loopback port with EdgeProtocol at ``limits`` (None: uvicorn's own protocol)."""
    protocol = EdgeProtocol.with_limits(limits) if limits is not None else None
    with uvicorn_in_thread(settings, http=protocol if protocol is not None else "auto") as port:
        yield Server(port=port, protocol=protocol)


def connect(port: int, first_bytes: bytes = b"", *, timeout_s: float) -> socket.socket:
    """A client socket that has sent ``first_bytes``; reads time out after ``timeout_s``."""
    sock = socket.create_connection((HOST, port), timeout=timeout_s)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def read_until_closed(sock: socket.socket, *, timeout_s: float) -> tuple[bytes, float | None]:
    """Everything the server sends, and the seconds until it closed the connection (None: still open)."""
    start = time.monotonic()
    sock.settimeout(timeout_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, None
    except ConnectionResetError:
        pass
    return received, time.monotonic() - start
