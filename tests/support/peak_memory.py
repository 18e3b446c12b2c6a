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

# Source for the child, which the measuring scripts start with: ``anon()`` is its anonymous
# resident memory (tensors and allocator state, not library pages), and ``print_growth(run)``
# runs ``run`` while sampling it every 2 ms, then prints the peak growth as JSON.
ANON_SOURCE = """
import json, threading, time

def anon():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon")

def print_growth(run):
    before = anon()
    peak, done = [before], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anon())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    run()
    done.set()
    watcher.join()
    print(json.dumps({"growth": max(peak[0], anon()) - before}))
"""
