"""Run a command with a CPU hog beside it: ``python -m tests.support.hog [-n N] -- CMD ...``.

N busy processes (default: the host's core count) spin for as long as the command runs, and
stop by themselves after ``--max-s`` in any case. The exit status is the command's.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time

DEFAULT_MAX_S = 3 * 3600.0


def _spin(until: float) -> None:
    """Burn one core until the monotonic clock reaches ``until``."""
    count = 0
    while time.monotonic() < until:
        count += 1


def main() -> int:
    """Start the hogs, run the command, stop the hogs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-s", type=float, default=DEFAULT_MAX_S)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a command after --")
    until = time.monotonic() + args.max_s
    hogs = [multiprocessing.Process(target=_spin, args=(until,), daemon=True) for _ in range(args.processes)]
    for hog in hogs:
        hog.start()
    print(f"hog: {len(hogs)} busy processes beside: {' '.join(command)}", flush=True)
    try:
        return subprocess.call(command)
    finally:
        for hog in hogs:
            hog.terminate()
        for hog in hogs:
            hog.join(5)


if __name__ == "__main__":
    sys.exit(main())
