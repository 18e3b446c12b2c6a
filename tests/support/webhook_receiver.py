"""A webhook receiver for tests: an HTTP server on loopback (a thread) that records every POST and
answers as a test scripts it (a status per request, optionally after a delay)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# (status, seconds to wait before answering) for the n-th request (0-based)
Script = Callable[[int], tuple[int, float]]
POLL_S = 0.05


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    headers: dict[str, str]
    body: str
    at: float

    @property
    def event(self) -> str:
        """The Standard Webhooks event type, e.g. ``job.completed``."""
        return str(self.json()["type"])

    def json(self) -> dict[str, Any]:
        """The body, parsed."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    def verifies_with(self, secret: str) -> bool:
        """Whether the standardwebhooks library accepts it with ``secret``."""
        try:
            Webhook(secret).verify(self.body, self.headers)
        except WebhookVerificationError:
            return False
        return True


class Receiver:
    """Records POSTs; ``script`` says what to answer."""

    def __init__(self, server: http.server.ThreadingHTTPServer) -> None:
        self._server = server
        self.received: list[Received] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        """Where to send webhooks."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def snapshot(self) -> list[Received]:
        """What arrived so far."""
        with self.lock:
            return list(self.received)

    def wait_for(self, until: Callable[[list[Received]], bool], timeout: float) -> list[Received]:
        """Block until ``until(received)`` holds; TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.snapshot()
            if until(seen):
                return seen
            time.sleep(POLL_S)
        raise TimeoutError(f"receiver: not there within {timeout}s; got {[r.event for r in self.snapshot()]}")


@contextmanager
def receiver(script: Script = lambda _n: (200, 0.0)) -> Iterator[Receiver]:
    """A receiver on a free loopback port, closed on exit (a hanging answer is abandoned)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            with box.lock:
                index = len(box.received)
                box.received.append(Received(headers=dict(self.headers.items()), body=body, at=time.time()))
            status, delay = script(index)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:  # the sender gave up first
                pass

        def log_message(self, *_: Any) -> None:
            """Quiet."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()
