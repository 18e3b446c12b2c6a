"""Torch intra-op threads of each worker process: its share of the cores it may use.

Without ``ATELIER_TORCH_THREADS``, torch gives every process one thread per core, so two workers on
one host oversubscribe it and their OpenMP threads spin-wait on each other (20-60x slower). Instead,
each worker process registers in a host-wide directory (``Settings.worker_registry_path``): a file
named by its pid, created already under an exclusive flock and held until the process exits. At
every job start the process counts the live registrants and takes its share of the cores it may
use: its CPU affinity, capped by the cgroup CPU quota. A worker whose threads are fixed (configured,
or a CUDA worker's small number) records them, and the others share what is left.

This module never imports torch at import time: the Celery parent imports it and must not.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from shared.config import Settings

log = logging.getLogger(__name__)

MIN_THREADS: Final = 1
GPU_WORKER_THREADS: Final = 2  # a CUDA worker's CPU threads only feed the GPU
INTEROP_THREADS: Final = 1
# Set in a worker's environment before torch is imported (workers/celery_app.py does it): an idle
# OpenMP thread sleeps instead of spinning. Processes the registry cannot see (the API, Postgres, a
# test run, a worker in another container) then cost a parallel region a wake-up, not a time slice
# spent spinning; with one thread per process (the usual share on a small host) it changes nothing.
OPENMP_ENV: Final = {"OMP_WAIT_POLICY": "PASSIVE"}

# --- cgroups ----------------------------------------------------------------------
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP: Final = Path("/proc/self/cgroup")
UNKNOWN_CGROUPS: Final = "0::/\n1:cpu:/"  # when /proc/self/cgroup is unreadable: the mount roots only
CGROUP_V1_CPU_MOUNTS: Final = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
CPU_MAX: Final = "cpu.max"  # v2: "<quota> <period>" or "max <period>"
CFS_QUOTA: Final = "cpu.cfs_quota_us"  # v1: -1 when unlimited
CFS_PERIOD: Final = "cpu.cfs_period_us"
NO_QUOTA: Final = "max"
DEFAULT_PERIOD_US: Final = 100_000.0

# --- the registry -----------------------------------------------------------------
ENTRY_SUFFIX: Final = ".worker"
PENDING_PREFIX: Final = ".pending-"  # written and locked under this name, then renamed: never seen unlocked
PENDING_STALE_S: Final = 60.0
SHARE: Final = "share"  # an entry's text when the worker takes a share; otherwise its thread count
REGISTRY_MODE: Final = 0o1777  # like /tmp: every user's workers count, none can remove another's entry
ENTRY_MODE: Final = 0o644  # others read the demand and test the lock
ENTRY_READ_BYTES: Final = 64


# --- the arithmetic (pure) --------------------------------------------------------


def parse_cpu_max(text: str) -> float | None:
    """Cores allowed by a cgroup v2 ``cpu.max`` ("150000 100000" -> 1.5); None when unlimited."""
    fields = text.split()
    if not fields or fields[0] == NO_QUOTA:
        return None
    try:
        quota = float(fields[0])
        period = float(fields[1]) if len(fields) > 1 else DEFAULT_PERIOD_US
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """Cores allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``; None when unlimited (-1)."""
    try:
        quota, period = float(quota_text.strip()), float(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_dirs(proc_cgroup: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """Every cgroup directory whose CPU quota binds this process: its own and each ancestor, v2 and v1."""
    dirs: list[Path] = []
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            mounts = [root]
        elif "cpu" in controllers.split(","):
            mounts = [root / mount for mount in CGROUP_V1_CPU_MOUNTS]
        else:
            continue
        parts = [part for part in path.split("/") if part]
        for mount in mounts:
            # From the own cgroup up to the mount root; a container without a cgroup namespace sees
            # the host's path, which does not exist under its mount, so the root is what applies.
            dirs += [mount.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]
    return dirs


def cgroup_quota(read: Callable[[Path], str | None], proc_cgroup: str, root: Path = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota, in cores, over :func:`cgroup_dirs`; None when none is set."""
    quotas: list[float] = []
    for directory in cgroup_dirs(proc_cgroup, root):
        cpu_max = read(directory / CPU_MAX)
        if cpu_max is not None:
            quota = parse_cpu_max(cpu_max)
        else:
            cfs_quota, cfs_period = read(directory / CFS_QUOTA), read(directory / CFS_PERIOD)
            quota = parse_cfs(cfs_quota, cfs_period) if cfs_quota is not None and cfs_period is not None else None
        if quota is not None:
            quotas.append(quota)
    return min(quotas, default=None)


def usable_cores(*, affinity: int, quota: float | None) -> int:
    """Cores a process may keep busy: its affinity, capped by the cgroup quota (rounded down); at least 1."""
    cores = affinity if quota is None else min(affinity, math.floor(quota))
    return max(MIN_THREADS, cores)


def fixed_threads(*, configured: int | None, device_type: str) -> int | None:
    """What a worker records in the registry: its fixed thread count, or None when it takes a share."""
    if configured is not None:
        return configured
    return GPU_WORKER_THREADS if device_type == "cuda" else None


def choose_threads(*, configured: int | None, device_type: str, cores: int, others: Sequence[int | None] = ()) -> int:
    """Intra-op threads for one worker: the configured number, else an equal share of what fixed workers leave.

    ``others`` holds each other live worker's fixed thread count, or None for one that takes a share.
    A CUDA worker takes at most GPU_WORKER_THREADS; nobody gets fewer than one.
    """
    if configured is not None:
        return max(MIN_THREADS, configured)
    fixed = sum(threads for threads in others if threads is not None)
    sharing = 1 + sum(1 for threads in others if threads is None)
    share = max(MIN_THREADS, (cores - fixed) // sharing)
    return min(GPU_WORKER_THREADS, share) if device_type == "cuda" else share


def openmp_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """The OPENMP_ENV entries ``environ`` does not set already (an operator's choice wins)."""
    return {name: value for name, value in OPENMP_ENV.items() if name not in environ}


# --- the registry -----------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """This process's registry entry: a file it holds under an exclusive flock until it exits."""

    path: Path
    fd: int
    pid: int

    def close(self) -> None:
        """Leave the registry now (a process that exits leaves it too: the kernel drops its lock)."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _encode(threads: int | None) -> bytes:
    return (SHARE if threads is None else str(threads)).encode()


def _decode(raw: bytes) -> int | None:
    """An entry's fixed thread count; anything unreadable counts as a share (the cautious reading)."""
    text = raw.decode(errors="replace").strip()
    return int(text) if text.isdigit() and int(text) >= MIN_THREADS else None


def _ensure_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):  # someone else created it meanwhile
        os.chmod(directory, REGISTRY_MODE)  # mkdir's mode is cut by the umask


def register(directory: Path, *, threads: int | None) -> Registration:
    """Add this process to the registry with its fixed thread count (None: it takes a share); OSError if unusable."""
    _ensure_dir(directory)
    fd, pending = tempfile.mkstemp(prefix=PENDING_PREFIX, dir=directory)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, _encode(threads))
        os.fchmod(fd, ENTRY_MODE)
        path = directory / f"{os.getpid()}-{secrets.token_hex(4)}{ENTRY_SUFFIX}"
        os.rename(pending, path)  # the entry appears locked, so no counter takes it for a dead one
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(pending)
        raise
    return Registration(path=path, fd=fd, pid=os.getpid())


def _probe(path: Path) -> bytes | None:
    """A live entry's text; None (and the entry removed) when its process is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return SHARE.encode()  # cannot test it: count it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, ENTRY_READ_BYTES)  # its owner holds the lock: alive
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    finally:
        os.close(fd)


def _drop_stale_pending(path: Path) -> None:
    """Remove a pending file that a process left when it died before renaming it."""
    try:
        if time.time() - path.stat().st_mtime < PENDING_STALE_S:
            return
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        with contextlib.suppress(OSError):
            path.unlink()
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def live_workers(directory: Path, *, exclude: Path | None = None) -> list[int | None]:
    """The fixed thread count (None: a share) of every live registrant but ``exclude``; drops dead ones' entries."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    found: list[int | None] = []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.endswith(ENTRY_SUFFIX) and path != exclude:
            raw = _probe(path)
            if raw is not None:
                found.append(_decode(raw))
        elif entry.name.startswith(PENDING_PREFIX):
            _drop_stale_pending(path)
    return found


# --- this process -----------------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def host_cores() -> int:
    """Cores this process may use now: its CPU affinity, capped by its cgroup CPU quota."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or MIN_THREADS)
    own = _read_text(PROC_SELF_CGROUP) or UNKNOWN_CGROUPS
    return usable_cores(affinity=affinity, quota=cgroup_quota(_read_text, own))


class _Process:
    """This process's registration (made on the first call, in the pool child, never in the parent)."""

    registration: Registration | None = None
    unavailable: Path | None = None  # a registry directory that could not be used (warned once)


def _device_type(preference: str) -> str:
    from workers.engines import pick_device

    return pick_device(preference).type


def _register_once(settings: Settings, threads: int | None) -> Registration | None:
    """Register on the first call in this process; a fork's inherited registration does not count."""
    directory = settings.worker_registry_path
    current = _Process.registration
    if current is not None and current.pid == os.getpid() and current.path.parent == directory:
        return current
    if _Process.unavailable == directory:
        return None
    try:
        _Process.registration = register(directory, threads=threads)
    except OSError as exc:
        _Process.unavailable = directory
        log.warning("worker registry %s is unusable (%s): torch threads ignore other workers", directory, exc)
        return None
    return _Process.registration


def apply_worker_threads(settings: Settings) -> int:
    """Set this worker process's torch threads (at process start and at every job start); returns them."""
    import torch

    device_type = _device_type(settings.device)
    registration = _register_once(settings, fixed_threads(configured=settings.torch_threads, device_type=device_type))
    # Counted even when the threads are configured: counting also removes dead processes' entries.
    exclude = registration.path if registration is not None else None
    others = live_workers(settings.worker_registry_path, exclude=exclude)
    threads = choose_threads(
        configured=settings.torch_threads, device_type=device_type, cores=host_cores(), others=others
    )
    if torch.get_num_interop_threads() != INTEROP_THREADS:
        # Allowed only before the first inter-op parallel work: set it at process start.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(INTEROP_THREADS)
    if torch.get_num_threads() != threads:
        log.info("torch intra-op threads %d -> %d (%d other workers)", torch.get_num_threads(), threads, len(others))
        torch.set_num_threads(threads)
    return threads
