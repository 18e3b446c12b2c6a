"""Delivering one webhook (task ``atelier.deliver_webhook``, on the ``cpu`` queue). No torch.

An attempt claims its delivery (shared/db/queries/webhooks.py), resolves and checks the URL again
(shared/webhooks.py; the connection goes to the address that was checked), POSTs the stored body
with Standard Webhooks headers under one hard deadline, records the attempt, and leaves the delivery
delivered (2xx), pending with its next try from the retry schedule, or failed after the last one.
Retries are sent by the reconciler's sweep once due, never by Celery countdowns: Postgres holds the
schedule, so a lost message or a restarted worker delays a delivery, never loses it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import certifi
import httpx

from shared.config import Settings
from shared.db import queries
from shared.db.session import transaction
from shared.errors import InvalidInput
from shared.webhooks import (
    DNS_TIMEOUT_S,
    FIELD,
    Target,
    headers,
    message_id,
    resolve_target,
    retry_delay_s,
    signing_secrets,
)
from workers.runtime import WorkerContext

log = logging.getLogger(__name__)

CLAIM_MARGIN_S = 5.0  # a claim outlives its attempt's deadline by this much
HTTP_OK_MIN, HTTP_OK_MAX = 200, 299
# httpcore's trace events that carry a new stream: the TCP connection, then (https) its TLS wrapper
STREAM_EVENTS = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})
MIN_REMAINING_S = 0.05


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt got: a status code, or an error; and how long until the answer's head."""

    status_code: int | None
    error: str | None
    latency_ms: float | None

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and HTTP_OK_MIN <= self.status_code <= HTTP_OK_MAX


class _Deadline:
    """Shuts the attempt's socket when the deadline passes, so no trickling peer can hold it longer."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._timer.cancel()

    def trace(self, name: str, info: dict[str, Any]) -> None:
        """httpx's trace hook: note the socket once connected (and again once TLS wraps it)."""
        if name not in STREAM_EVENTS:
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._sock = sock
            if self.expired and sock is not None:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shut(self._sock)


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown, on a TLS socket too: ssl.SSLSocket.shutdown would also drop the TLS
    # state under the thread reading from it. A closed (or detached) socket has no descriptor: EBADF.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def post(
    target: Target, *, body: str, request_headers: dict[str, str], timeout_s: float, started: float | None = None
) -> Outcome:
    """POST ``body`` to the target, done (connect, send, the answer's head) ``timeout_s`` after ``started``
    (a ``time.monotonic()``; default now) at the latest; no redirects."""
    started = time.monotonic() if started is None else started
    remaining = max(timeout_s - (time.monotonic() - started), MIN_REMAINING_S)
    timed_out = f"timed out after {timeout_s:g} s"
    sent_headers = {**request_headers, "host": target.host_header}
    deadline = _Deadline(remaining)
    extensions: dict[str, Any] = {"sni_hostname": target.host, "trace": deadline.trace}
    try:
        with (
            deadline,
            httpx.Client(timeout=remaining, follow_redirects=False, trust_env=False, verify=_tls_context()) as client,
        ):
            request = client.build_request(
                "POST", target.url, content=body.encode(), headers=sent_headers, extensions=extensions
            )
            response = client.send(request, stream=True)  # the head is enough; the body is never read
            latency_ms = _since(started)
            response.close()
    except httpx.HTTPError as exc:
        expired = deadline.expired or isinstance(exc, httpx.TimeoutException)
        return Outcome(
            status_code=None, error=timed_out if expired else f"{type(exc).__name__}: {exc}", latency_ms=_since(started)
        )
    return Outcome(status_code=response.status_code, error=None, latency_ms=latency_ms)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process (httpx would build and load one for every client)."""
    return ssl.create_default_context(cafile=certifi.where())


def _since(started: float) -> float:
    return (time.monotonic() - started) * 1000


def attempt_once(claimed: queries.ClaimedDelivery, *, settings: Settings) -> Outcome:
    """Resolve and check the URL again, then POST the signed body, all within the attempt's deadline."""
    started = time.monotonic()
    try:
        target = resolve_target(
            claimed.url,
            allowed_hosts=settings.webhook_allowed_hosts,
            timeout_s=min(DNS_TIMEOUT_S, settings.webhook_timeout_s),
        )
    except InvalidInput as exc:  # a DNS answer that changed to a private address, or none at all
        return Outcome(status_code=None, error=exc.message.removeprefix(f"{FIELD}: "), latency_ms=None)
    keys = signing_secrets(
        claimed.secret.current,
        previous=claimed.secret.previous,
        rotated_at=claimed.secret.rotated_at,
        now=claimed.now,
    )
    msg_id = message_id(claimed.id)
    request_headers = headers(keys=keys, msg_id=msg_id, timestamp=int(time.time()), body=claimed.body)
    return post(
        target,
        body=claimed.body,
        request_headers=request_headers,
        timeout_s=settings.webhook_timeout_s,
        started=started,
    )


def deliver(ctx: WorkerContext, delivery_id: uuid.UUID) -> str:
    """One attempt at a delivery; returns the delivery's new state, or why nothing was sent."""
    settings = ctx.settings
    with transaction(ctx.sessions) as session:
        claimed = queries.claim_delivery(
            session,
            delivery_id=delivery_id,
            hold_s=settings.webhook_timeout_s + CLAIM_MARGIN_S,
            per_tenant=settings.webhook_per_tenant_concurrency,
        )
    if isinstance(claimed, queries.Refusal):
        log.debug("webhook delivery %s: %s", delivery_id, claimed.value)
        return claimed.value
    started_at = datetime.now(UTC)
    outcome = attempt_once(claimed, settings=settings)
    retry_in = None if outcome.delivered else retry_delay_s(claimed.attempt, settings.webhook_retry_schedule_s)
    with transaction(ctx.sessions) as session:
        state = queries.finish_attempt(
            session,
            delivery_id=claimed.id,
            attempt=claimed.attempt,
            started_at=started_at,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
            delivered=outcome.delivered,
            retry_in_s=retry_in,
        )
    if not outcome.delivered:
        log.info(
            "webhook delivery %s attempt %d: %s; %s",
            claimed.id,
            claimed.attempt,
            outcome.error or f"HTTP {outcome.status_code}",
            f"retry in {retry_in:.1f} s" if retry_in is not None else "giving up",
        )
    return state or "superseded"
