"""Slow clients (slowloris): a client that sends part of a request head or body and then nothing
is disconnected within the configured timeout, and one address cannot hold more than its cap of
idle connections. Real uvicorn servers in threads, raw sockets; uvicorn's plain protocol is run
beside EdgeProtocol to show that the plain one holds such clients.

Each test reads Given / When / Then."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from services.api.edge import EdgeLimits
from shared.config import Settings
from tests.support.edge_server import HOST, Server, connect, edge_server, read_until_closed

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
IDLE_CAP = 16
SLACK_S = 2.0  # a loaded 2-core host: the timer fires late, never early
HELD_S = HEADER_TIMEOUT_S + 2 * SLACK_S  # the plain server still holds the client after this
FLOOD = 2_000
FLOOD_DEADLINE_S = 30.0
TRICKLE_EVERY_S = 0.3
PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: atelier\r\nX-Slow: "
PARTIAL_BODY = b'{"type": "gan.tr'
DECLARED_BODY = 4096


def _left(start: float) -> float:
    """What remains of HELD_S since ``start`` (at least a moment)."""
    return max(0.1, HELD_S - (time.monotonic() - start))


def partial_body_request(length: int = DECLARED_BODY) -> bytes:
    """A complete head for a JSON POST that declares ``length`` bytes, and the first few of them."""
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: atelier\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + PARTIAL_BODY


@pytest.fixture(scope="module")
def limits() -> EdgeLimits:
    """Short timeouts, so each test takes seconds."""
    return EdgeLimits(header_timeout_s=HEADER_TIMEOUT_S, body_timeout_s=BODY_TIMEOUT_S, max_idle_per_client=IDLE_CAP)


@pytest.fixture(scope="module")
def edge_at(settings: Settings, limits: EdgeLimits) -> Iterator[Server]:
    """The API behind EdgeProtocol."""
    with edge_server(settings, limits) as server:
        yield server


@pytest.fixture(scope="module")
def edge(edge_at: Server) -> int:
    """The port of the API behind EdgeProtocol."""
    return edge_at.port


@pytest.fixture(scope="module")
def plain(settings: Settings) -> Iterator[int]:
    """The API on uvicorn's own protocol (what ran before the edge); yields its port."""
    with edge_server(settings, None) as server:
        yield server.port


def test_slow_headers_are_disconnected_within_the_header_timeout(edge: int, plain: int) -> None:
    # Given a client that sends part of a request head and then nothing, to each server
    start = time.monotonic()
    guarded = connect(edge, PARTIAL_HEAD, timeout_s=HELD_S)
    unguarded = connect(plain, PARTIAL_HEAD, timeout_s=HELD_S)
    # When it waits
    with guarded, unguarded:
        answer, closed_after = read_until_closed(guarded, timeout_s=HELD_S)
        _nothing, plain_closed_after = read_until_closed(unguarded, timeout_s=_left(start))
    # Then the edge answers 408 and closes at the header timeout
    assert closed_after is not None, "the edge kept a slow-header client"
    assert HEADER_TIMEOUT_S * 0.9 <= closed_after <= HEADER_TIMEOUT_S + SLACK_S, closed_after
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"code": "request_timeout"' in answer
    # And uvicorn's own protocol still holds it 5 s after it connected (the finding this fixes)
    assert plain_closed_after is None


def test_a_trickled_head_does_not_extend_the_deadline(edge: int) -> None:
    # Given a client that sends a header byte every 0.3 s, never finishing the head
    with connect(edge, PARTIAL_HEAD, timeout_s=HELD_S) as sock:
        start = time.monotonic()
        try:
            while time.monotonic() - start < HELD_S:
                sock.sendall(b"x")
                time.sleep(TRICKLE_EVERY_S)
        except (BrokenPipeError, ConnectionResetError):
            pass
        # Then it is cut off at the header deadline, counted from the connection, not from its last byte
        answer, _closed_after = read_until_closed(sock, timeout_s=SLACK_S)
        assert time.monotonic() - start <= HEADER_TIMEOUT_S + SLACK_S + TRICKLE_EVERY_S
    assert answer.startswith(b"HTTP/1.1 408 "), answer


def test_a_silent_connection_is_closed_quietly(edge: int) -> None:
    # Given a connection that sends nothing at all
    with connect(edge, timeout_s=HELD_S) as sock:
        # Then it is closed at the header timeout, with no response (there was no request)
        answer, closed_after = read_until_closed(sock, timeout_s=HELD_S)
    assert closed_after is not None and closed_after <= HEADER_TIMEOUT_S + SLACK_S
    assert answer == b""


def test_slow_body_is_disconnected_within_the_body_timeout(edge: int, plain: int) -> None:
    # Given a client that sends a whole head declaring 4 KiB, 16 bytes of body, then nothing
    start = time.monotonic()
    guarded = connect(edge, partial_body_request(), timeout_s=HELD_S)
    unguarded = connect(plain, partial_body_request(), timeout_s=HELD_S)
    with guarded, unguarded:
        answer, closed_after = read_until_closed(guarded, timeout_s=HELD_S)
        _nothing, plain_closed_after = read_until_closed(unguarded, timeout_s=_left(start))
    # Then the edge answers 408 and closes at the body timeout
    assert closed_after is not None, "the edge kept a slow-body client"
    assert BODY_TIMEOUT_S * 0.9 <= closed_after <= BODY_TIMEOUT_S + SLACK_S, closed_after
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"no request body bytes" in answer
    # And uvicorn's own protocol still waits for the rest of the body 5 s after it connected
    assert plain_closed_after is None


def test_a_steady_slow_body_is_not_cut_off(edge: int) -> None:
    # Given a body that takes 3 body timeouts to send, a chunk every half timeout
    body = b'{"type": "gan.train", "params": {"dataset": "digits", "steps": 10}}'
    chunks = [body[i : i + 8] for i in range(0, len(body), 8)]
    head = (
        f"POST /v1/jobs HTTP/1.1\r\nHost: atelier\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with connect(edge, head, timeout_s=HELD_S) as sock:
        for chunk in chunks:
            time.sleep(BODY_TIMEOUT_S / 2)
            sock.sendall(chunk)
        answer, _closed_after = read_until_closed(sock, timeout_s=HELD_S)
    # Then the request is served (401: it carries no key), not timed out
    assert answer.startswith(b"HTTP/1.1 401 "), answer


def test_an_oversized_head_is_refused(edge: int) -> None:
    # Given a head that goes on past 64 KiB without ending
    with connect(edge, PARTIAL_HEAD + b"y" * (70 * 1024), timeout_s=HELD_S) as sock:
        answer, closed_after = read_until_closed(sock, timeout_s=HELD_S)
    # Then it is refused with 431 at once
    assert answer.startswith(b"HTTP/1.1 431 "), answer
    assert closed_after is not None and closed_after < HEADER_TIMEOUT_S


def test_keep_alive_still_works_between_requests(edge: int) -> None:
    # Given one connection used for two requests, well inside the head deadline
    with httpx.Client(base_url=f"http://127.0.0.1:{edge}", timeout=HELD_S) as client:
        first = client.get("/healthz")
        second = client.get("/healthz")
    # Then both are served
    assert (first.status_code, second.status_code) == (200, 200)


def test_a_flood_of_slow_clients_is_capped_and_closed(edge_at: Server) -> None:
    # Given 2,000 connections from one address, each with part of a request head
    assert edge_at.protocol is not None
    idle = edge_at.protocol.idle
    selector = selectors.DefaultSelector()
    start = time.monotonic()
    socks: list[socket.socket] = []
    most_waiting = 0
    try:
        for _ in range(FLOOD):
            sock = connect(edge_at.port, PARTIAL_HEAD, timeout_s=FLOOD_DEADLINE_S)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            socks.append(sock)
            most_waiting = max(most_waiting, idle.count(HOST))
        # When a well-behaved request arrives meanwhile
        served = httpx.get(f"{edge_at.url}/healthz", timeout=FLOOD_DEADLINE_S)
        # Then it is served
        assert served.status_code == 200
        # And the server never held more than the cap of them waiting
        assert most_waiting <= IDLE_CAP, most_waiting
        # And every flood connection is closed by the server: beyond the cap at once, the rest at the deadline
        open_socks = set(socks)
        closed_at: list[float] = []
        deadline = time.monotonic() + FLOOD_DEADLINE_S
        while open_socks and time.monotonic() < deadline:
            for key, _events in selector.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    open_socks.discard(sock)
                    closed_at.append(time.monotonic() - start)
        assert not open_socks, f"{len(open_socks)} of {FLOOD} slow connections still open after {FLOOD_DEADLINE_S} s"
        print(
            f"\n{FLOOD} slow-header connections from one address: at most {most_waiting} held at once "
            f"(cap {IDLE_CAP}); all closed by the server {max(closed_at):.1f} s after the first opened"
        )
    finally:
        selector.close()
        for sock in socks:
            sock.close()
