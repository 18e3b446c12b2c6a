"""Torch threads per worker process (workers/threads.py): the arithmetic with fakes, the registry on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.config import Settings
from workers.threads import (
    CGROUP_ROOT,
    ENTRY_SUFFIX,
    GPU_WORKER_THREADS,
    PENDING_PREFIX,
    PENDING_STALE_S,
    cgroup_quota,
    choose_threads,
    fixed_threads,
    live_workers,
    openmp_defaults,
    parse_cfs,
    parse_cpu_max,
    register,
    usable_cores,
)

ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS_TIMEOUT_S = 120


def _reader(files: dict[Path, str]) -> Callable[[Path], str | None]:
    """A fake file reader: the text of ``files``, None for anything else."""
    return files.get


# --- cores ---------------------------------------------------------------------------


def test_two_cores_two_workers_get_one_thread_each() -> None:
    cores = usable_cores(affinity=2, quota=None)
    assert choose_threads(configured=None, device_type="cpu", cores=cores, others=[None]) == 1


def test_a_cgroup_v2_quota_of_one_and_a_half_cores_gives_one_thread() -> None:
    # Given 16 cores of affinity but cpu.max "150000 100000"
    quota = cgroup_quota(_reader({CGROUP_ROOT / "cpu.max": "150000 100000\n"}), "0::/\n")
    # Then the quota is 1.5 cores, and a lone worker takes one thread
    assert quota == 1.5
    cores = usable_cores(affinity=16, quota=quota)
    assert choose_threads(configured=None, device_type="cpu", cores=cores) == 1


def test_cgroup_v1_cfs_quota_is_read_and_minus_one_is_unlimited() -> None:
    v1 = CGROUP_ROOT / "cpu"
    limited = _reader({v1 / "cpu.cfs_quota_us": "300000\n", v1 / "cpu.cfs_period_us": "100000\n"})
    unlimited = _reader({v1 / "cpu.cfs_quota_us": "-1\n", v1 / "cpu.cfs_period_us": "100000\n"})
    assert cgroup_quota(limited, "1:cpu:/\n") == 3.0
    assert cgroup_quota(unlimited, "1:cpu:/\n") is None
    assert parse_cfs("-1", "100000") is None


def test_the_tightest_quota_of_the_cgroup_and_its_ancestors_applies() -> None:
    files = {CGROUP_ROOT / "a" / "cpu.max": "300000 100000", CGROUP_ROOT / "a" / "b" / "cpu.max": "max 100000"}
    assert cgroup_quota(_reader(files), "0::/a/b\n") == 3.0


def test_a_container_without_a_cgroup_namespace_reads_its_mount_root() -> None:
    # /proc/self/cgroup names the host's path, which does not exist inside the container
    files = {CGROUP_ROOT / "cpu.max": "200000 100000"}
    assert cgroup_quota(_reader(files), "0::/system.slice/docker-abc.scope\n") == 2.0


def test_no_quota_leaves_the_affinity() -> None:
    assert parse_cpu_max("max 100000") is None
    assert parse_cpu_max("garbage") is None
    assert cgroup_quota(_reader({}), "0::/\n") is None
    assert usable_cores(affinity=6, quota=None) == 6
    assert usable_cores(affinity=6, quota=8.0) == 6


# --- the share ---------------------------------------------------------------------------


def test_sixteen_cores_three_workers_get_five_threads_each() -> None:
    assert choose_threads(configured=None, device_type="cpu", cores=16, others=[None, None]) == 5


def test_the_configured_value_wins() -> None:
    assert choose_threads(configured=3, device_type="cpu", cores=2, others=[None] * 5) == 3
    assert choose_threads(configured=3, device_type="cuda", cores=64) == 3
    assert fixed_threads(configured=3, device_type="cpu") == 3


def test_a_cuda_worker_keeps_a_small_number() -> None:
    assert choose_threads(configured=None, device_type="cuda", cores=64) == GPU_WORKER_THREADS
    assert fixed_threads(configured=None, device_type="cuda") == GPU_WORKER_THREADS
    # ... and never more than its share of a small host
    assert choose_threads(configured=None, device_type="cuda", cores=2, others=[None]) == 1


def test_workers_with_fixed_threads_leave_the_rest_to_share() -> None:
    # Given 8 cores, a housekeeping worker fixed at 1 and another sharing worker
    assert choose_threads(configured=None, device_type="cpu", cores=8, others=[1, None]) == 3
    assert fixed_threads(configured=None, device_type="cpu") is None


def test_never_below_one_thread() -> None:
    assert usable_cores(affinity=1, quota=0.5) == 1
    assert choose_threads(configured=None, device_type="cpu", cores=1, others=[None] * 3) == 1
    assert choose_threads(configured=None, device_type="cpu", cores=4, others=[8]) == 1
    assert choose_threads(configured=None, device_type="cuda", cores=1, others=[GPU_WORKER_THREADS] * 4) == 1


def test_openmp_wait_policy_is_set_unless_the_operator_chose_one() -> None:
    assert openmp_defaults({}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert openmp_defaults({"OMP_WAIT_POLICY": "ACTIVE"}) == {}


def test_the_default_registry_is_host_wide() -> None:
    assert Settings().worker_registry_path.name == "atelier-workers"
    assert Settings(worker_registry_dir=Path("/x")).worker_registry_path == Path("/x")


# --- the registry ------------------------------------------------------------------------


def test_live_registrants_are_counted_and_dead_ones_removed(tmp_path: Path) -> None:
    # Given two live registrants (each holds its entry under flock) and the entry of a dead process
    sharing = register(tmp_path, threads=None)
    fixed = register(tmp_path, threads=1)
    dead = tmp_path / f"999999-0000{ENTRY_SUFFIX}"
    dead.write_text("share")
    try:
        # When they are counted
        found = live_workers(tmp_path)
        # Then the live ones are, with what they asked for, and the dead entry is gone
        assert sorted(found, key=str) == sorted([None, 1], key=str)
        assert not dead.exists()
        assert live_workers(tmp_path, exclude=sharing.path) == [1]
    finally:
        sharing.close()
    assert live_workers(tmp_path) == [1]
    fixed.close()
    assert live_workers(tmp_path) == []


def test_a_pending_entry_is_removed_only_once_stale(tmp_path: Path) -> None:
    fresh, stale = tmp_path / f"{PENDING_PREFIX}fresh", tmp_path / f"{PENDING_PREFIX}stale"
    for path in (fresh, stale):
        path.write_text("share")
    old = time.time() - 2 * PENDING_STALE_S
    os.utime(stale, (old, old))
    assert live_workers(tmp_path) == []
    assert fresh.exists() and not stale.exists()


def test_a_missing_registry_counts_nobody(tmp_path: Path) -> None:
    assert live_workers(tmp_path / "absent") == []


def test_a_worker_rebalances_at_its_next_job_when_another_registers(tmp_path: Path) -> None:
    # In a fresh process (the call sets torch's threads and fixes inter-op threads for good).
    script = textwrap.dedent(
        f"""
        import json, torch
        from pathlib import Path
        from shared.config import Settings
        from workers.threads import apply_worker_threads, host_cores, register

        settings = Settings(torch_threads=None, device="cpu", worker_registry_dir=Path({str(tmp_path)!r}))
        alone = apply_worker_threads(settings)              # process start: registers
        other = register(settings.worker_registry_path, threads=None)  # a second worker starts
        beside = apply_worker_threads(settings)             # the first one's next job
        other.close()
        after = apply_worker_threads(settings)
        print(json.dumps({{"cores": host_cores(), "alone": alone, "beside": beside, "after": after,
                          "now": torch.get_num_threads(), "interop": torch.get_num_interop_threads()}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATELIER_", "OMP_", "MKL_"))}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    cores = seen["cores"]
    assert (seen["alone"], seen["beside"], seen["after"]) == (cores, max(1, cores // 2), cores)
    assert seen["now"] == cores and seen["interop"] == 1


@pytest.mark.parametrize("text", ["share", "", "zero", "0"])
def test_an_unreadable_entry_counts_as_a_sharing_worker(tmp_path: Path, text: str) -> None:
    entry = register(tmp_path, threads=None)
    try:
        os.pwrite(entry.fd, text.encode().ljust(8), 0)
        assert live_workers(tmp_path) == [None]
    finally:
        entry.close()
