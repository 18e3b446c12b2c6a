"""Measuring a run's peak memory in a child process, for the memory-estimate tests."""

from __future__ import annotations

import os

# One thread and glibc returning freed blocks to the system at once: peak RSS then follows the
# live tensors, not allocator caching (which varied with whatever ran before in a full suite).
MEASURE_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "MALLOC_", "ATELIER_"))},
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": "131072",
    "MALLOC_TRIM_THRESHOLD_": "0",
}

# Source for the child: ``anon()`` is its anonymous resident memory (tensors and allocator state,
# not library pages). The measuring scripts start with this.
ANON_SOURCE = """
def anon():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")
"""
