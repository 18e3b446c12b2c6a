"""The HTTP edge: how long a client may take to send a request, and how many idle connections it
may hold. uvicorn closes a keep-alive connection that stays idle after a response
(``--timeout-keep-alive``), but it has no deadline for a request head or body: a client that sends
part of one and then nothing keeps its connection open for ever. ``EdgeProtocol`` is uvicorn's own
HTTP protocol (httptools, or h11 without it) with, per connection:

- a head deadline: the request line and headers must be complete within ``http_header_timeout_s`` of
  the connection opening or of its previous response. It is a deadline, not an idle timer, so
  trickling a byte at a time does not extend it. Past it: a 408 if part of a request came, then close;
- a body idle timeout: while the app waits for body bytes, none for ``http_body_timeout_s`` closes the
  connection (with a 408 if no response has started);
- at most ``http_max_idle_per_client`` connections per client address (an IPv6 /64 as one) waiting for
  a request head; one more closes that address's oldest waiting connection (0: no cap);
- at most ``MAX_HEAD_BYTES`` of an incomplete request head (httptools sets no limit of its own): 431.

Start the API with both halves, so that the protocol gets the same settings as the app::

    uvicorn services.api.edge:create_app --factory --http services.api.edge:EdgeProtocol
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from services.api import app as api
from services.api.ratelimit import client_address
from shared.config import Settings

if TYPE_CHECKING:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpProtocol
else:  # httptools when installed, else h11: the same choice as uvicorn's --http auto
    from uvicorn.protocols.http.auto import AutoHTTPProtocol as _HttpProtocol

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024  # request line and headers; uvicorn's h11 default is 16 KiB
REQUEST_TIMEOUT = 408
HEAD_TOO_LARGE = 431
REASONS = {REQUEST_TIMEOUT: "Request Timeout", HEAD_TOO_LARGE: "Request Header Fields Too Large"}
DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass(frozen=True)
class EdgeLimits:
    """What a client connection is allowed (docs/DESIGN.md, "The HTTP edge")."""

    header_timeout_s: float
    body_timeout_s: float
    max_idle_per_client: int
    max_head_bytes: int = MAX_HEAD_BYTES

    @classmethod
    def of(cls, settings: Settings) -> EdgeLimits:
        """The limits a Settings object configures."""
        return cls(
            header_timeout_s=settings.http_header_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            max_idle_per_client=settings.http_max_idle_per_client,
        )


class IdleConnections:
    """Connections waiting for a request head, per client address, oldest first."""

    def __init__(self) -> None:
        self._by_client: dict[str, dict[EdgeProtocol, None]] = {}

    def add(self, client: str, connection: EdgeProtocol, *, cap: int) -> list[EdgeProtocol]:
        """Count ``connection`` as waiting; returns the client's oldest ones beyond ``cap`` (0: none), to close."""
        waiting = self._by_client.setdefault(client, {})
        waiting[connection] = None
        if cap <= 0 or len(waiting) <= cap:
            return []
        oldest = list(waiting)[: len(waiting) - cap]
        for stale in oldest:
            del waiting[stale]
        return oldest

    def discard(self, client: str, connection: EdgeProtocol) -> None:
        """``connection`` no longer waits (its head arrived, or it closed)."""
        waiting = self._by_client.get(client)
        if waiting is not None:
            waiting.pop(connection, None)
            if not waiting:
                del self._by_client[client]

    def count(self, client: str) -> int:
        """How many of the client's connections wait for a request head now."""
        return len(self._by_client.get(client, ()))


def _error_bytes(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response in the API's format, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class EdgeProtocol(_HttpProtocol):
    """uvicorn's HTTP protocol with a head deadline, a body idle timeout and a per-client idle cap."""

    limits: ClassVar[EdgeLimits] = EdgeLimits.of(Settings.model_construct())  # until create_app configures it
    idle: ClassVar[IdleConnections] = IdleConnections()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Wrap the app so that body reads have a deadline."""
        super().__init__(*args, **kwargs)
        self._inner_app = self.app
        self.app = self._app_with_body_deadline
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._client_key = ""

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """Apply ``settings``' limits to every connection made from now on."""
        cls.limits = EdgeLimits.of(settings)

    @classmethod
    def with_limits(cls, limits: EdgeLimits) -> type[EdgeProtocol]:
        """A subclass with its own limits and idle registry (a second server in one process, e.g. a test)."""
        return type(cls.__name__, (cls,), {"limits": limits, "idle": IdleConnections()})

    # --- connection events (uvicorn's, extended) ---------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head deadline; count the connection as waiting for its client."""
        super().connection_made(transport)
        self._client_key = client_address(self.client[0] if self.client else None)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        """Parse as uvicorn does; note when a request head is complete, and cap an incomplete one."""
        if self._head_timer is None:  # a request is in progress: its body, or a pipelined request
            super().data_received(data)
            return
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # the parser finished a head and uvicorn started its request
            self._head_arrived()
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.limits.max_head_bytes and not self.transport.is_closing():
            message = f"request line and headers are over {self.limits.max_head_bytes} bytes"
            self._close(HEAD_TOO_LARGE, "header_too_large", message)

    def on_response_complete(self) -> None:
        """After a response, the connection waits for the next head (unless one is already parsed)."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._head_arrived()
        super().connection_lost(exc)

    # --- the head deadline and the idle cap ----------------------------------------------

    def _await_head(self) -> None:
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        for stale in self.idle.add(self._client_key, self, cap=self.limits.max_idle_per_client):
            stale._evict()

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.idle.discard(self._client_key, self)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self.idle.discard(self._client_key, self)
        if self.transport.is_closing():
            return
        if self._head_bytes == 0:  # nothing of a request came: an idle connection, closed quietly
            self.transport.close()
            return
        timeout = self.limits.header_timeout_s
        log.info("closing a connection from %s: no complete request head within %g s", self._client_key, timeout)
        self._close(REQUEST_TIMEOUT, "request_timeout", f"the request head did not arrive within {timeout:g} s")

    def _evict(self) -> None:
        """Close this waiting connection: its client opened more than its cap of waiting ones."""
        self._head_arrived()
        if not self.transport.is_closing():
            log.debug("closing the oldest waiting connection of %s (over its idle cap)", self._client_key)
            self.transport.close()

    def _close(self, status: int, code: str, message: str) -> None:
        self.transport.write(_error_bytes(status, code, message))
        self.transport.close()

    # --- the body deadline -----------------------------------------------------------------

    async def _app_with_body_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; a wait for body bytes that outlasts the body timeout closes the connection."""
        if scope["type"] != "http":
            await self._inner_app(scope, receive, send)
            return
        body_done = False
        response_started = False

        async def receive_in_time() -> Message:
            nonlocal body_done
            if body_done:  # later reads only listen for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout(self.limits.body_timeout_s):
                    message = await receive()
            except TimeoutError:
                self._body_timed_out(respond=not response_started)
                return DISCONNECT
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def noting_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        await self._inner_app(scope, receive_in_time, noting_send)

    def _body_timed_out(self, *, respond: bool) -> None:
        if self.transport.is_closing():
            return
        timeout = self.limits.body_timeout_s
        log.info("closing a connection from %s: no request body bytes for %g s", self._client_key, timeout)
        if respond:
            self._close(REQUEST_TIMEOUT, "request_timeout", f"no request body bytes arrived for {timeout:g} s")
        else:
            self.transport.close()


def create_app() -> FastAPI:
    """uvicorn's factory: the API and EdgeProtocol, both configured from the environment (ATELIER_*)."""
    settings = Settings()
    EdgeProtocol.configure(settings)
    return api.create_app(settings)
