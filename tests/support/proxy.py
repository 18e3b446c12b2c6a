"""A TCP proxy on loopback between the code under test and a real server, with the faults a
network has:
- ``cut()``: reset every connection and refuse new ones (a server that is gone), then
  ``restore()``;
- ``freeze()``: stop forwarding while every socket stays open and no RST is sent (a NAT or
  load-balancer idle drop, a failover, a cable pull). The connections open then, and those
  made while frozen, never carry another byte, as after a real silent drop; ``thaw()`` makes
  new connections work again;
- ``slow(latency_s, bytes_per_s)``: every chunk waits ``latency_s`` and the throughput is
  capped (a trickle), until ``unslow()``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field

BUFFER = 65536
ACCEPT_POLL_S = 0.2
SLOW_CHUNKS_PER_S = 20  # a slowed link sends this many chunks a second, each bytes_per_s / this


@dataclass(eq=False)
class _Link:
    """One proxied connection: both sockets, and whether it has gone silent for good."""

    sockets: tuple[socket.socket, socket.socket]
    silent: threading.Event = field(default_factory=threading.Event)


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target host:port."""

    target: tuple[str, int]
    port: int
    _listener: socket.socket | None = None
    _links: set[_Link] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _frozen: threading.Event = field(default_factory=threading.Event)
    _closed: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _latency_s: float = 0.0
    _bytes_per_s: float | None = None
    frozen_links: int = 0  # connections frozen so far (a test can check that a freeze hit something)

    def start(self) -> TcpProxy:
        """Listen and forward."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(ACCEPT_POLL_S)
        self._listener = listener
        self._stop.clear()
        self._closed.clear()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._frozen.is_set():  # accepted by the kernel, then nothing: a black hole
                link = _Link(sockets=(client, client))
                link.silent.set()
                with self._lock:
                    self._links.add(link)
                    self.frozen_links += 1
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            link = _Link(sockets=(client, upstream))
            with self._lock:
                self._links.add(link)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(link, src, dst), daemon=True).start()

    def _pipe(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                if link.silent.is_set():
                    self._closed.wait()  # hold both sockets open, read nothing, send nothing
                    return
                rate = self._bytes_per_s
                size = BUFFER if rate is None else max(1, int(rate / SLOW_CHUNKS_PER_S))
                data = src.recv(size)
                if not data:
                    break
                if link.silent.is_set():  # frozen while this chunk was in flight: it never arrives
                    self._closed.wait()
                    return
                if self._latency_s:
                    time.sleep(self._latency_s)
                if rate is not None:
                    time.sleep(len(data) / rate)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if not link.silent.is_set() or self._closed.is_set():
                self._close_link(link)

    def _close_link(self, link: _Link) -> None:
        for sock in set(link.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            self._links.discard(link)

    def cut(self) -> None:
        """Stop listening and reset every open connection: the service is gone."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._thread is not None:
            self._thread.join(2)
        with self._lock:
            links = list(self._links)
            self._links.clear()
        self._closed.set()
        for link in links:
            for sock in set(link.sockets):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.close()

    def restore(self) -> None:
        """Listen again: the service is back."""
        self._frozen.clear()
        self.start()

    def freeze(self) -> int:
        """Every open connection goes silent for good, and new ones are black holes; returns how many froze."""
        self._frozen.set()
        with self._lock:
            links = [link for link in self._links if not link.silent.is_set()]
            for link in links:
                link.silent.set()
            self.frozen_links += len(links)
        return len(links)

    def thaw(self) -> None:
        """New connections are forwarded again; the frozen ones stay silent, as after a real drop."""
        self._frozen.clear()

    def slow(self, *, latency_s: float = 0.0, bytes_per_s: float | None = None) -> None:
        """Delay every chunk by ``latency_s`` and cap each direction of each link at ``bytes_per_s``."""
        self._latency_s = latency_s
        self._bytes_per_s = bytes_per_s

    def unslow(self) -> None:
        """Full speed again."""
        self._latency_s = 0.0
        self._bytes_per_s = None
