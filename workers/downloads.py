"""Downloads made by workers (ImageNet weights, torchvision datasets) get a socket timeout, so
a black-holed network fails the job instead of hanging the worker."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Final

DOWNLOAD_TIMEOUT_S: Final = 30.0  # per socket operation


@contextlib.contextmanager
def socket_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Set the process-wide default socket timeout (urllib callers pass none), then restore it."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)
