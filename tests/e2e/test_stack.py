"""End to end: `python -m services.stack` brings everything up, stops cleanly on SIGINT, and keeps its data."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest
import redis

from services import stack as stack_module

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 40.0  # the stack's own grace is 15 s per tier; an idle stack stops in a few seconds
REFUSE_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 10.0
URL_LINE = re.compile(r"^\s+API\s+(http://\S+)\s*$")
LOCKED_LINE = re.compile(r"another stack is already running")
QUEUE_NAME = "gpu"  # a queued message must survive a restart, like Celery's


# --- helpers -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _hermetic_env() -> dict[str, str]:
    """The caller's environment without ATELIER_* settings, so the embedded services are used."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ATELIER_")}


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _processes_using(data_dir: Path) -> list[psutil.Process]:
    """Live processes whose command line names the data dir (postgres -D, redis --dir, beat --schedule, ...)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(str(data_dir) in part for part in cmdline) and _alive(process):
            found.append(process)
    return found


def _postmaster(data_dir: Path) -> psutil.Process | None:
    try:
        return psutil.Process(int((data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0]))
    except (OSError, IndexError, ValueError, psutil.Error):
        return None


class StackProcess:
    """`python -m services.stack` in its own session, its console collected line by line."""

    def __init__(self, *, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = port
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.stack", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=REPO_ROOT,
            env=_hermetic_env() | (env or {}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def console(self) -> str:
        """Everything printed so far, plus the tails of the logs, for failure messages."""
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        logs = self.data_dir / "logs"
        tails = [
            f"--- {log.name}\n{stack_module.log_tail(log)}"
            for log in sorted(logs.glob("*.log")) if logs.exists()
        ]  # fmt: skip
        return "\n".join(["--- console", *self.lines, *tails])

    def wait_for(self, pattern: re.Pattern[str], *, timeout_s: float) -> re.Match[str]:
        """Block until a console line matches; fail with the console if it exits or times out first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait()
                pytest.fail(f"stack exited with {self.process.returncode} before {pattern.pattern!r}\n{self.console()}")
            self.lines.append(line)
            match = pattern.search(line)
            if match:
                return match
        pytest.fail(f"no {pattern.pattern!r} within {timeout_s:.0f} s\n{self.console()}")

    def descendants(self) -> list[psutil.Process]:
        """Every process the stack started: its process tree, plus the daemonised postmaster."""
        found = psutil.Process(self.process.pid).children(recursive=True)
        postmaster = _postmaster(self.data_dir)
        if postmaster is not None:
            found.append(postmaster)
        return found

    def training_workers(self) -> list[psutil.Process]:
        """The training workers' processes (Celery on the gpu queue: parents and pool children)."""
        found = []
        for process in psutil.Process(self.process.pid).children(recursive=True):
            cmdline = process.cmdline()
            if "celery" in " ".join(cmdline) and "worker" in cmdline and "gpu" in cmdline:
                found.append(process)
        return found

    def interrupt(self) -> int:
        """Ctrl-C, and the exit code once it has stopped."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"stack still running {STOP_TIMEOUT_S:.0f} s after SIGINT\n{self.console()}")

    def kill(self) -> None:
        """Teardown after a failure: whatever is left goes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A fresh data dir, short enough for Postgres' unix socket path; nothing left running afterwards."""
    root = Path(tempfile.mkdtemp(prefix="atelier-e2e-"))
    data = root / "data"
    try:
        yield data
    finally:
        for process in _processes_using(data):
            if process.name() == "postgres" and process == _postmaster(data):
                stack_module.stop_postgres(data / "pgdata")
            elif _alive(process):
                process.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stacks() -> Iterator[list[StackProcess]]:
    """Stacks started by a test; any still running at teardown are stopped."""
    started: list[StackProcess] = []
    yield started
    for running in started:
        running.kill()


# --- tests ---------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_stack_starts_stops_on_sigint_and_keeps_its_data(data_dir: Path, stacks: list[StackProcess]) -> None:
    # Given a stack started on a fresh data dir
    first = StackProcess(data_dir=data_dir, port=_free_port())
    stacks.append(first)
    base_url = first.wait_for(URL_LINE, timeout_s=READY_TIMEOUT_S).group(1)

    # Then it is healthy and has written the dev API key
    assert httpx.get(f"{base_url}/healthz", timeout=HTTP_TIMEOUT_S).status_code == 200, first.console()
    key_file = data_dir / "api-key"
    assert key_file.exists(), first.console()
    api_key = key_file.read_text().strip()
    assert api_key, "api-key file is empty"
    assert key_file.stat().st_mode & 0o077 == 0, "api-key must be private (0600)"
    started = first.descendants()
    names = " ".join(" ".join(p.cmdline()) for p in started)
    for expected in ("postgres", "redis-server", "uvicorn", "celery"):
        assert expected in names, f"no {expected} among the stack's processes: {names}"
    # with one training worker that sees the machine's devices as they are (this machine lists no GPU)
    pinned = {p.environ().get("CUDA_VISIBLE_DEVICES") for p in first.training_workers()}
    assert pinned == {os.environ.get("CUDA_VISIBLE_DEVICES")}, first.console()

    # When it gets Ctrl-C
    exit_code = first.interrupt()

    # Then it exits 0 and leaves nothing running
    assert exit_code == 0, first.console()
    leftovers = [p for p in started if _alive(p)] + _processes_using(data_dir)
    assert not leftovers, f"still running after SIGINT: {leftovers}\n{first.console()}"

    # When it starts again on the same data dir, told to run one training worker per GPU on GPUs 0 and 1
    second = StackProcess(data_dir=data_dir, port=_free_port(), env={"ATELIER_GPU_WORKERS": "0,1"})
    stacks.append(second)
    base_url = second.wait_for(URL_LINE, timeout_s=READY_TIMEOUT_S).group(1)

    # Then the same key still authenticates: the database survived the restart
    assert key_file.read_text().strip() == api_key
    response = httpx.get(f"{base_url}/v1/jobs", headers={"Authorization": f"Bearer {api_key}"}, timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{second.console()}"
    # And each training worker (and its pool children) is pinned to its own GPU and named after it
    workers = second.training_workers()
    seen = {(p.environ().get("CUDA_VISIBLE_DEVICES"), p.environ().get("ATELIER_WORKER_NAME", "")[:5]) for p in workers}
    assert seen == {("0", "gpu0@"), ("1", "gpu1@")}, second.console()
    assert (data_dir / "logs" / "worker-gpu0.log").exists() and (data_dir / "logs" / "worker-gpu1.log").exists()
    assert second.interrupt() == 0, second.console()
    assert not _processes_using(data_dir), second.console()


@pytest.mark.timeout(90)
def test_embedded_postgres_and_redis_keep_data_across_a_restart(data_dir: Path) -> None:
    # Given the stack's embedded Postgres and Redis started on a fresh data dir
    layout = stack_module.Layout(root=data_dir)
    layout.create()
    first = stack_module.Stack(layout=layout)
    try:
        database_url = stack_module.start_postgres(first)
        redis_url = stack_module.start_redis(first, env=_hermetic_env())
        # They don't take the system services' ports
        assert ":6379/" not in redis_url
        assert "host=" in database_url and str(layout.pgdata) in database_url

        # When a row is committed and a message is queued
        conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("atelier",)
            conn.execute("CREATE TABLE survivor (id int PRIMARY KEY)")
            conn.execute("INSERT INTO survivor VALUES (42)")
        with redis.Redis.from_url(redis_url) as client:
            client.lpush(QUEUE_NAME, b'{"job_id": "42"}')
    finally:
        # And the stack stops them
        started = [p for p in (first.pg_process, *(psutil.Process(c.pid) for c in [first.redis] if c)) if p]
        stack_module.shutdown(first)
    assert not [p for p in started if _alive(p)]
    assert not _processes_using(data_dir)

    # Then, started again, both still hold the data, and Redis came back on the same port
    second = stack_module.Stack(layout=layout)
    try:
        assert stack_module.start_postgres(second) == database_url
        assert stack_module.start_redis(second, env=_hermetic_env()) == redis_url
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("SELECT id FROM survivor").fetchall() == [(42,)]
        with redis.Redis.from_url(redis_url) as client:
            assert client.lrange(QUEUE_NAME, 0, -1) == [b'{"job_id": "42"}']

        # And a second stack on the same data dir is refused while this one holds it
        with stack_module.data_dir_lock(layout):
            refused = subprocess.run(
                [sys.executable, "-m", "services.stack", "--port", str(_free_port()), "--data-dir", str(data_dir)],
                cwd=REPO_ROOT,
                env=_hermetic_env(),
                capture_output=True,
                text=True,
                timeout=REFUSE_TIMEOUT_S,
            )
        assert refused.returncode == 1
        assert LOCKED_LINE.search(refused.stdout), refused.stdout + refused.stderr
    finally:
        stack_module.shutdown(second)
    assert not _processes_using(data_dir)
